//! Named points inside the protocols that cross processes (a ring's put and get, a
//! lock's release, a sleeper's steps, a manager transaction's stores), where a test
//! can hold a thread to force an interleaving, or have it die there, and then check
//! what that leaves behind. Outside `cargo test`'s build of the library a point is
//! the constant [`Step::Go`], compiled away.
//!
//! A thread "dies" at a point as a killed process would stop there: the code stores
//! nothing more and releases nothing (a lock it holds stays held by a thread that
//! then ends, which is how the robust locks see an owner's death).

/// What a thread does at a point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    Go,
    Die,
}

#[cfg(test)]
pub(crate) use hook::{clear, die_at, set};

/// What a thread does at the point named `name`.
#[inline(always)]
pub(crate) fn point(name: &'static str) -> Step {
    #[cfg(test)]
    {
        hook::run(name)
    }
    #[cfg(not(test))]
    {
        let _ = name;
        Step::Go
    }
}

#[cfg(test)]
mod hook {
    use std::cell::{Cell, RefCell};
    use std::rc::Rc;

    use super::Step;

    type Hook = Box<dyn FnMut(&'static str) -> Step>;

    thread_local! {
        static HOOK: RefCell<Option<Hook>> = const { RefCell::new(None) };
    }

    /// Sets this thread's hook, called at every point the thread passes.
    pub(crate) fn set(hook: impl FnMut(&'static str) -> Step + 'static) {
        HOOK.with(|h| *h.borrow_mut() = Some(Box::new(hook)));
    }

    /// Removes this thread's hook.
    pub(crate) fn clear() {
        HOOK.with(|h| *h.borrow_mut() = None);
    }

    /// Dies at the `n`th point (from 0) whose name starts with `prefix`; the cell
    /// says whether it has.
    pub(crate) fn die_at(prefix: &'static str, n: u32) -> Rc<Cell<bool>> {
        let died = Rc::new(Cell::new(false));
        let flag = Rc::clone(&died);
        let mut left = n;
        set(move |name| {
            if flag.get() || !name.starts_with(prefix) {
                return Step::Go;
            }
            if left == 0 {
                flag.set(true);
                return Step::Die;
            }
            left -= 1;
            Step::Go
        });
        died
    }

    pub(super) fn run(name: &'static str) -> Step {
        // A point reached from inside the hook itself (it may use a ring) just goes.
        HOOK.with(|h| match h.try_borrow_mut() {
            Ok(mut hook) => hook.as_mut().map_or(Step::Go, |f| f(name)),
            Err(_) => Step::Go,
        })
    }
}
