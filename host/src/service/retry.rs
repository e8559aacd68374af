//! The retry policy, as data: which indeterminate failures are tried again, how often, for which
//! execution priority.
//!
//! Only *indeterminate* failures are ever retried — a deterministic verdict is the same on a
//! second try. A bad stored artifact is not a retry either: the validation transaction already
//! discards it and re-prepares inside one attempt.

use std::fmt;
use std::time::Duration;

use crate::error::{ExecuteError, ServiceError, ValidationError};

use super::ExecutionPriority;

/// A kind of indeterminate failure that a retry may cure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RetryClass {
    /// The wall-clock deadline of the execution passed (a loaded machine).
    Timeout,
    /// The artifact store failed with an I/O error.
    Store,
    /// An internal host error, a lost worker task, or an execution worker that died or hung
    /// under the call.
    Worker,
    /// The execution queue was full.
    Overloaded,
}

impl RetryClass {
    /// Every class, in a fixed order.
    pub const ALL: [RetryClass; 4] = [
        RetryClass::Timeout,
        RetryClass::Store,
        RetryClass::Worker,
        RetryClass::Overloaded,
    ];

    /// The class of `error`, or `None` when it must not be retried: deterministic failures,
    /// shutdown, unknown code, and preparation failures (those have their own cooldown).
    pub fn of(error: &ValidationError) -> Option<RetryClass> {
        match error {
            ValidationError::Execute(ExecuteError::Timeout(_)) => Some(Self::Timeout),
            ValidationError::Execute(ExecuteError::Internal(_) | ExecuteError::Worker(_)) => {
                Some(Self::Worker)
            }
            ValidationError::Store(_) => Some(Self::Store),
            ValidationError::Service(ServiceError::Overloaded { .. }) => Some(Self::Overloaded),
            ValidationError::Service(ServiceError::Worker(_)) => Some(Self::Worker),
            ValidationError::Service(
                ServiceError::ShuttingDown
                | ServiceError::CodeUnknown(_)
                | ServiceError::PrepareTimeout(_)
                | ServiceError::PrepareCoolingDown { .. },
            )
            | ValidationError::Prepare(_)
            | ValidationError::Execute(_) => None,
        }
    }

    /// `"timeout"`, `"store"`, `"worker"` or `"overloaded"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Store => "store",
            Self::Worker => "worker",
            Self::Overloaded => "overloaded",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for RetryClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How many times each [`RetryClass`] is retried, per [`ExecutionPriority`], and how long to
/// wait before a retry.
///
/// The default is the reference system's: backing gets one attempt; approval and dispute retry
/// once per class, after 3 s.
///
/// ```
/// use std::time::Duration;
/// use pvf_host::{ExecutionPriority, RetryClass, RetryPolicy};
/// let policy = RetryPolicy::default()
///     .retries(ExecutionPriority::Backing, RetryClass::Overloaded, 1)
///     .delay(Duration::from_millis(100));
/// assert_eq!(policy.retries_for(ExecutionPriority::Backing, RetryClass::Overloaded), 1);
/// assert_eq!(policy.retries_for(ExecutionPriority::Backing, RetryClass::Timeout), 0);
/// assert_eq!(policy.retries_for(ExecutionPriority::Dispute, RetryClass::Timeout), 1);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// `table[priority][class]`: retries allowed.
    table: [[u8; 4]; 3],
    delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            table: [[0; 4], [1; 4], [1; 4]],
            delay: Duration::from_secs(3),
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries.
    pub fn none() -> Self {
        Self {
            table: [[0; 4]; 3],
            delay: Duration::ZERO,
        }
    }

    /// Allows `retries` retries of `class` failures at `priority`.
    pub fn retries(mut self, priority: ExecutionPriority, class: RetryClass, retries: u8) -> Self {
        self.table[priority.index()][class.index()] = retries;
        self
    }

    /// Sets the wait before each retry (default 3 s).
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// How many retries of `class` failures `priority` gets.
    pub fn retries_for(&self, priority: ExecutionPriority, class: RetryClass) -> u8 {
        self.table[priority.index()][class.index()]
    }

    /// The wait before a retry.
    pub fn get_delay(&self) -> Duration {
        self.delay
    }
}

/// Counts retries of one request against a policy.
#[derive(Debug, Default)]
pub(crate) struct RetryBudget {
    used: [u8; 4],
}

impl RetryBudget {
    /// If `error` may be retried once more at `priority`, counts it and returns its class.
    pub(crate) fn take(
        &mut self,
        policy: &RetryPolicy,
        priority: ExecutionPriority,
        error: &ValidationError,
    ) -> Option<RetryClass> {
        let class = RetryClass::of(error)?;
        let used = &mut self.used[class.index()];
        if *used < policy.retries_for(priority, class) {
            *used += 1;
            Some(class)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::PrepareError;

    #[test]
    fn default_is_the_reference_policy() {
        let policy = RetryPolicy::default();
        for class in RetryClass::ALL {
            assert_eq!(policy.retries_for(ExecutionPriority::Backing, class), 0);
            assert_eq!(policy.retries_for(ExecutionPriority::Approval, class), 1);
            assert_eq!(policy.retries_for(ExecutionPriority::Dispute, class), 1);
        }
        assert_eq!(policy.get_delay(), Duration::from_secs(3));
    }

    #[test]
    fn budget_counts_per_class_and_never_retries_deterministic_failures() {
        let policy = RetryPolicy::default();
        let timeout = ValidationError::Execute(ExecuteError::Timeout(Duration::from_secs(2)));
        let overloaded = ValidationError::Service(ServiceError::Overloaded {
            queue: "execute",
            capacity: 1,
        });
        let trap = ValidationError::Execute(ExecuteError::Trap("unreachable".into()));
        let bad_code = ValidationError::Prepare(PrepareError::InvalidCode("x".into()));

        let mut backing = RetryBudget::default();
        assert_eq!(
            backing.take(&policy, ExecutionPriority::Backing, &timeout),
            None
        );

        let mut approval = RetryBudget::default();
        let p = ExecutionPriority::Approval;
        assert_eq!(
            approval.take(&policy, p, &timeout),
            Some(RetryClass::Timeout)
        );
        assert_eq!(approval.take(&policy, p, &timeout), None);
        assert_eq!(
            approval.take(&policy, p, &overloaded),
            Some(RetryClass::Overloaded)
        );
        assert_eq!(approval.take(&policy, p, &trap), None);
        assert_eq!(approval.take(&policy, p, &bad_code), None);
        assert_eq!(
            RetryClass::of(&ValidationError::Service(ServiceError::ShuttingDown)),
            None
        );
    }
}
