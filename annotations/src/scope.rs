//! Per-task [`Annotations`], [`Placement`], and the [`ScopeStack`] that composes nested scopes.

use serde::{Deserialize, Serialize};

use crate::{Pool, Resources};

/// Where a task may run, as the user said it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// No word from the user: the propagate-pools pass decides.
    #[default]
    Free,
    /// Explicitly unrestricted: never pinned, never propagated into or through.
    Any,
    /// Runs only on workers of this pool.
    Pinned(Pool),
}

impl Placement {
    /// The pool of a pinned placement.
    pub fn pool(&self) -> Option<&Pool> {
        match self {
            Placement::Pinned(p) => Some(p),
            _ => None,
        }
    }
}

/// Annotations of a task or of a scope. Every field is optional: a scope that sets only
/// `retries` leaves the pool of an enclosing scope in force, and a task's own settings override
/// its scopes' field by field.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Annotations {
    /// Pinned, any-pool or free.
    pub placement: Option<Placement>,
    /// Resources consumed while the task runs (`gpu=1`). Overlaid by name when scopes nest.
    pub resources: Option<Resources>,
    /// Higher runs first among ready tasks. Default 0.
    pub priority: Option<i32>,
    /// How many times a failed task is re-run. Default 0.
    pub retries: Option<u32>,
    /// Estimated output size in bytes, for the cost model.
    pub size_hint: Option<u64>,
    /// A run longer than this fails the task (a `command` task's process is killed).
    pub timeout: Option<std::time::Duration>,
    /// Durable at this version: committed to the progress store when it finishes, skipped
    /// (its stored output reused) when a later submission finds it done.
    pub durable: Option<u64>,
}

impl Annotations {
    /// No settings.
    pub fn new() -> Annotations {
        Annotations::default()
    }

    /// Pins to `pool`.
    pub fn pool(mut self, pool: Pool) -> Annotations {
        self.placement = Some(Placement::Pinned(pool));
        self
    }

    /// Marks as any-pool: never restricted.
    pub fn any_pool(mut self) -> Annotations {
        self.placement = Some(Placement::Any);
        self
    }

    /// Sets the resources consumed while running.
    pub fn resources(mut self, resources: Resources) -> Annotations {
        self.resources = Some(resources);
        self
    }

    /// Sets the priority.
    pub fn priority(mut self, priority: i32) -> Annotations {
        self.priority = Some(priority);
        self
    }

    /// Sets the number of retries.
    pub fn retries(mut self, retries: u32) -> Annotations {
        self.retries = Some(retries);
        self
    }

    /// Sets the estimated output size in bytes.
    pub fn size_hint(mut self, bytes: u64) -> Annotations {
        self.size_hint = Some(bytes);
        self
    }

    /// Sets the timeout.
    pub fn timeout(mut self, timeout: std::time::Duration) -> Annotations {
        self.timeout = Some(timeout);
        self
    }

    /// Makes tasks durable at `version`.
    pub fn durable(mut self, version: u64) -> Annotations {
        self.durable = Some(version);
        self
    }

    /// Lays `inner` over `self`: every field `inner` sets wins; resources are overlaid by name.
    pub fn overlay(&mut self, inner: &Annotations) {
        if let Some(p) = &inner.placement {
            self.placement = Some(p.clone());
        }
        if let Some(r) = &inner.resources {
            match &mut self.resources {
                Some(mine) => mine.overlay(r),
                None => self.resources = Some(r.clone()),
            }
        }
        self.priority = inner.priority.or(self.priority);
        self.retries = inner.retries.or(self.retries);
        self.size_hint = inner.size_hint.or(self.size_hint);
        self.timeout = inner.timeout.or(self.timeout);
        self.durable = inner.durable.or(self.durable);
    }
}

/// A stack of nested annotation scopes, with the composed result kept ready so that adding a
/// task costs no folding.
#[derive(Debug, Clone, Default)]
pub struct ScopeStack {
    frames: Vec<Annotations>,
    /// `effective[i]` is frames `0..=i` composed; the last one is in force.
    effective: Vec<Annotations>,
}

impl ScopeStack {
    /// An empty stack.
    pub fn new() -> ScopeStack {
        ScopeStack::default()
    }

    /// Enters a scope.
    pub fn push(&mut self, frame: Annotations) {
        let mut eff = self.current().clone();
        eff.overlay(&frame);
        self.frames.push(frame);
        self.effective.push(eff);
    }

    /// Leaves the innermost scope. Popping an empty stack does nothing.
    pub fn pop(&mut self) {
        self.frames.pop();
        self.effective.pop();
    }

    /// How many scopes are open.
    pub fn depth(&self) -> usize {
        self.frames.len()
    }

    /// The composed annotations of all open scopes.
    pub fn current(&self) -> &Annotations {
        static EMPTY: Annotations = Annotations {
            placement: None,
            resources: None,
            priority: None,
            retries: None,
            size_hint: None,
            timeout: None,
            durable: None,
        };
        self.effective.last().unwrap_or(&EMPTY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n: &str) -> Pool {
        Pool::new(n).unwrap()
    }

    #[test]
    fn innermost_pool_wins_and_other_fields_survive() {
        let mut s = ScopeStack::new();
        s.push(Annotations::new().pool(pool("A")).retries(2));
        s.push(Annotations::new().pool(pool("B")));
        assert_eq!(s.current().placement, Some(Placement::Pinned(pool("B"))));
        assert_eq!(s.current().retries, Some(2));
        s.push(Annotations::new().any_pool());
        assert_eq!(s.current().placement, Some(Placement::Any));
        s.pop();
        s.pop();
        assert_eq!(s.current().placement, Some(Placement::Pinned(pool("A"))));
        s.pop();
        assert_eq!(s.current(), &Annotations::new());
        s.pop();
        assert_eq!(s.depth(), 0);
    }

    #[test]
    fn setting_retries_never_loses_the_pool() {
        let mut s = ScopeStack::new();
        s.push(Annotations::new().pool(pool("A")));
        s.push(Annotations::new().retries(3).priority(5));
        let c = s.current();
        assert_eq!(c.placement, Some(Placement::Pinned(pool("A"))));
        assert_eq!((c.retries, c.priority), (Some(3), Some(5)));
    }

    #[test]
    fn resources_overlay_by_name() {
        let mut s = ScopeStack::new();
        s.push(Annotations::new().resources("gpu=1,mem=4".parse().unwrap()));
        s.push(Annotations::new().resources("gpu=2".parse().unwrap()));
        assert_eq!(
            s.current().resources.as_ref().unwrap().to_string(),
            "gpu=2,mem=4"
        );
    }
}
