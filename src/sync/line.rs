//! A value on a cache line of its own: words that different threads or processes
//! write at their own pace (a ring's positions, a result stream's state beside the
//! reference count its submitter changes) kept apart, so that writing one does not
//! take the other's line away from the core that uses it.

/// A value on a cache line of its own (64 bytes, aligned).
#[repr(C, align(64))]
pub(crate) struct Line<T>(pub(crate) T);

impl<T> std::ops::Deref for Line<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}
