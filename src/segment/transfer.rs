//! Handing shared objects to a child process: every shared object serializes as
//! handles to its segments, and deserializes by attaching to them again.
//!
//! Serializing happens inside [`collecting`], which gathers the segments the
//! arguments refer to (each once) and writes their slot numbers. The start method
//! then delivers those segments to the child: a forked child already has them in
//! its (copied) memory; a spawned or fork-server child receives their descriptors
//! (inherited at known numbers, or by `SCM_RIGHTS`). The child deserializes inside
//! [`receiving`], which turns slots back into segments, attaching each descriptor at
//! most once and validating its header before any typed code looks at it.
//!
//! Outside those scopes (a shared object inside a `Queue` or `Pipe` message, say), a
//! named object serializes as its name, and the receiver opens it by name; an
//! anonymous one refuses, and says so in the sender's error (see [`take_refusal`]):
//! a slot means nothing without the descriptor that travels beside it.

use std::cell::RefCell;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use serde::de::Error as _;
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{Segment, SegmentOpenError};

#[derive(Serialize, Deserialize)]
struct SegmentHandle {
    /// The segment's place among those handed to the child, or [`BY_NAME`].
    slot: u32,
    name: Option<String>,
}

/// A handle's slot when it travels in a message: the receiver opens it by name.
const BY_NAME: u32 = u32::MAX;

/// Where a child's incoming segments come from.
pub(crate) enum Incoming {
    /// A forked child: the parent's own segments, in the child's copy of its memory.
    Inherited(Vec<Arc<Segment>>),
    /// A spawned or fork-server child: descriptors, attached on first use.
    Received(Vec<OwnedFd>),
}

struct Receiving {
    source: Incoming,
    attached: Vec<Option<Arc<Segment>>>,
}

/// What a shared object must do once the child that receives it exists (its pid
/// given): a pipe end becomes that child's. Dropped, not run, if the start fails.
pub(crate) type HandOver = Box<dyn FnOnce(i32) + Send>;

thread_local! {
    static OUTGOING: RefCell<Option<Vec<Arc<Segment>>>> = const { RefCell::new(None) };
    static HANDOVERS: RefCell<Vec<HandOver>> = const { RefCell::new(Vec::new()) };
    static INCOMING: RefCell<Option<Receiving>> = const { RefCell::new(None) };
    /// Why the last shared object that refused to serialize on this thread did.
    static REFUSED: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Why a shared object refused to serialize just now on this thread, if one did:
/// for the encoder's error (serde formats keep no custom message).
pub(crate) fn take_refusal() -> Option<String> {
    REFUSED.with(|r| r.borrow_mut().take())
}

/// What to say of `e`, a failed serialization of a `T`: the refusal of a shared
/// object inside it if that is what failed (postcard keeps no custom message), else
/// `e` itself. The one place every encoder (messages, pool tasks, start
/// arguments) explains its failures.
pub(crate) fn encode_failure<T: ?Sized>(e: postcard::Error) -> String {
    let why = match e {
        postcard::Error::SerdeSerCustom => take_refusal(),
        _ => None,
    };
    format!("`{}`: {}", crate::names::type_name::<T>(), why.unwrap_or_else(|| e.to_string()))
}

/// Records `why` as this thread's refusal (see [`take_refusal`]) and returns it.
pub(crate) fn refuse(why: String) -> String {
    REFUSED.with(|r| *r.borrow_mut() = Some(why.clone()));
    why
}

/// Whether what is deserialized now is a child's start arguments.
pub(crate) fn receiving_now() -> bool {
    INCOMING.with(|i| i.borrow().is_some())
}

/// Whether shared objects serialized now go to a child being started.
pub(crate) fn collecting_now() -> bool {
    OUTGOING.with(|o| o.borrow().is_some())
}

/// Runs `serialize` with shared objects allowed to serialize, and returns what it
/// produced with the segments (in slot order) the child must be given, and the
/// hand-overs to run once it is started.
pub(crate) fn collecting<R>(serialize: impl FnOnce() -> R) -> (R, Vec<Arc<Segment>>, Vec<HandOver>) {
    /// Restores the outer scope even if `serialize` panics.
    struct Scope(Option<Vec<Arc<Segment>>>, Vec<HandOver>);
    impl Drop for Scope {
        fn drop(&mut self) {
            let outer = self.0.take();
            OUTGOING.with(|o| *o.borrow_mut() = outer);
            let outer = std::mem::take(&mut self.1);
            HANDOVERS.with(|h| *h.borrow_mut() = outer);
        }
    }
    let scope = Scope(
        OUTGOING.with(|o| o.borrow_mut().replace(Vec::new())),
        HANDOVERS.with(|h| std::mem::take(&mut *h.borrow_mut())),
    );
    let out = serialize();
    let segments = OUTGOING.with(|o| o.borrow_mut().take()).unwrap_or_default();
    let handovers = HANDOVERS.with(|h| std::mem::take(&mut *h.borrow_mut()));
    drop(scope);
    (out, segments, handovers)
}

/// Registers `f` to run with the child's pid once the start that is serializing
/// this object has succeeded (inside [`collecting`]; elsewhere, never).
pub(crate) fn on_handover(f: HandOver) {
    let collecting = OUTGOING.with(|o| o.borrow().is_some());
    if collecting {
        HANDOVERS.with(|h| h.borrow_mut().push(f));
    }
}

/// Runs `deserialize` with the child's incoming segments available to shared objects.
pub(crate) fn receiving<R>(source: Incoming, deserialize: impl FnOnce() -> R) -> R {
    let n = match &source {
        Incoming::Inherited(v) => v.len(),
        Incoming::Received(v) => v.len(),
    };
    /// Restores the outer scope even if `deserialize` panics.
    struct Scope(Option<Receiving>);
    impl Drop for Scope {
        fn drop(&mut self) {
            let outer = self.0.take();
            INCOMING.with(|i| *i.borrow_mut() = outer);
        }
    }
    let r = Receiving { source, attached: vec![None; n] };
    let _scope = Scope(INCOMING.with(|i| i.borrow_mut().replace(r)));
    deserialize()
}

/// Serializes handles to `segments` of the object `what` (a type name): slots of
/// the segments handed to a child being started, or names in a message.
pub(crate) fn serialize_segments<S: Serializer>(
    segments: &[&Arc<Segment>],
    what: &str,
    s: S,
) -> Result<S::Ok, S::Error> {
    let handles = OUTGOING.with(|o| {
        let mut o = o.borrow_mut();
        let Some(out) = o.as_mut() else {
            return by_name(segments, what).map_err(|why| S::Error::custom(refuse(why)));
        };
        Ok(segments
            .iter()
            .map(|seg| {
                let slot = match out.iter().position(|s| Arc::ptr_eq(s, seg)) {
                    Some(i) => i,
                    None => {
                        out.push(Arc::clone(seg));
                        out.len() - 1
                    }
                };
                SegmentHandle { slot: slot as u32, name: seg.name().map(str::to_owned) }
            })
            .collect::<Vec<_>>())
    })?;
    handles.serialize(s)
}

/// A message's handles: the segments' names, if all are named.
fn by_name(segments: &[&Arc<Segment>], what: &str) -> Result<Vec<SegmentHandle>, String> {
    segments
        .iter()
        .map(|seg| match seg.name() {
            Some(name) => Ok(SegmentHandle { slot: BY_NAME, name: Some(name.to_owned()) }),
            None => Err(anonymous_refusal(what)),
        })
        .collect()
}

/// What an anonymous object sent in a message is told.
pub(crate) fn anonymous_refusal(what: &str) -> String {
    format!(
        "`{what}` is an anonymous shared object: it travels to a child as (part of) its process arguments, \
         not inside a message; make it with `new_named` to send it by name"
    )
}

/// Deserializes `N` segment handles written by [`serialize_segments`].
pub(crate) fn deserialize_segments<'de, D: Deserializer<'de>, const N: usize>(
    d: D,
) -> Result<[Arc<Segment>; N], D::Error> {
    let handles = Vec::<SegmentHandle>::deserialize(d)?;
    if handles.len() != N {
        return Err(D::Error::invalid_length(handles.len(), &"the handles of one shared object"));
    }
    let segments = INCOMING.with(|i| {
        let mut i = i.borrow_mut();
        handles
            .into_iter()
            .map(|h| match (h.slot, &h.name, i.as_mut()) {
                (BY_NAME, Some(name), _) => Segment::open_unchecked(name).map(Arc::new).map_err(D::Error::custom),
                (_, _, Some(r)) => r.segment(h).map_err(D::Error::custom),
                (_, _, None) => Err(D::Error::custom("no shared segments were handed to this process")),
            })
            .collect::<Result<Vec<_>, _>>()
    })?;
    segments.try_into().map_err(|_| D::Error::custom("handle count"))
}

impl Receiving {
    fn segment(&mut self, h: SegmentHandle) -> Result<Arc<Segment>, SegmentOpenError> {
        let slot = h.slot as usize;
        let cached = self.attached.get(slot).ok_or(SegmentOpenError::Corrupted("segment slot out of range"))?;
        if let Some(seg) = cached {
            return Ok(Arc::clone(seg));
        }
        let seg = match &self.source {
            Incoming::Inherited(v) => Arc::clone(&v[slot]),
            Incoming::Received(fds) => {
                let fd = fds[slot].try_clone().map_err(|source| SegmentOpenError::Os { op: "dup", source })?;
                Arc::new(Segment::attach(fd, h.name)?)
            }
        };
        self.attached[slot] = Some(Arc::clone(&seg));
        Ok(seg)
    }
}

/// Implements `Serialize` and `Deserialize` for a shared object as handles to its
/// segments: `|this| [segments]` lists them, `|[segments]| constructor` rebuilds the
/// object from them (returning `Result<Self, SegmentOpenError>`).
macro_rules! serde_as_segments {
    ($ty:ty, $n:literal, |$this:ident| $segs:expr, |$arr:ident| $build:expr) => {
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let $this = self;
                let what = $crate::names::type_name::<Self>();
                $crate::segment::transfer::serialize_segments(&$segs, &what, s)
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let $arr = $crate::segment::transfer::deserialize_segments::<D, $n>(d)?;
                let build = move || -> Result<Self, $crate::SegmentOpenError> { $build };
                let built = build();
                built.map_err(<D::Error as serde::de::Error>::custom)
            }
        }
    };
}
pub(crate) use serde_as_segments;

/// Handles to some segments of the object named by the `str`, as one serializable
/// value (for objects that serialize other fields beside their segments).
pub(crate) struct SegmentsOf<'a>(pub(crate) &'a [&'a Arc<Segment>], pub(crate) &'a str);

impl Serialize for SegmentsOf<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_segments(self.0, self.1, s)
    }
}

/// `N` segments received, as one deserializable value.
pub(crate) struct Segments<const N: usize>(pub(crate) [Arc<Segment>; N]);

impl<'de, const N: usize> Deserialize<'de> for Segments<N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_segments::<D, N>(d).map(Segments)
    }
}
