//! Type names as a user reads them in an error: without module paths, so that a
//! message says `Value<u64>`, not `shmproc::shared::value::Value<u64>` (a private
//! path no user can name).

/// `std::any::type_name` with every path shortened to its last segment:
/// `alloc::vec::Vec<shmproc::shared::value::Value<u64>>` becomes `Vec<Value<u64>>`.
pub(crate) fn short_type_name(full: &str) -> String {
    let mut out = String::with_capacity(full.len());
    // Where the path being read began in `out`: a `::` drops what came since.
    let mut path_start = 0;
    let mut chars = full.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ':' && chars.peek() == Some(&':') {
            chars.next();
            out.truncate(path_start);
            continue;
        }
        if !(c.is_alphanumeric() || c == '_') {
            out.push(c);
            path_start = out.len();
            continue;
        }
        out.push(c);
    }
    out
}

/// [`short_type_name`] of `T`.
pub(crate) fn type_name<T: ?Sized>() -> String {
    short_type_name(std::any::type_name::<T>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_shortened_to_their_last_segment() {
        assert_eq!(short_type_name("shmproc::shared::value::Value<u64>"), "Value<u64>");
        assert_eq!(short_type_name("alloc::vec::Vec<shmproc::shared::value::Value<u64>>"), "Vec<Value<u64>>");
        assert_eq!(short_type_name("(u64, alloc::string::String)"), "(u64, String)");
        assert_eq!(short_type_name("&str"), "&str");
        assert_eq!(short_type_name("[u8; 3]"), "[u8; 3]");
        assert_eq!(type_name::<Option<String>>(), "Option<String>");
    }
}
