//! Validation of peer-supplied names: node names, segment paths, hex digests.

use super::ProtoError;

/// Longest segment path, in bytes.
pub const MAX_PATH_BYTES: usize = 1024;
/// Longest component of a segment path, in bytes.
pub const MAX_PATH_COMPONENT_BYTES: usize = 255;

fn invalid(field: &str, reason: impl Into<String>) -> ProtoError {
    ProtoError::InvalidKey {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

/// Checks a node name against the one name rule ([`base::names`]); `field` names it in the error.
pub fn validate_node_name(name: &str, field: &str) -> Result<(), ProtoError> {
    base::names::check(name).map_err(|e| invalid(field, format!("node name: {e}")))
}

/// Checks a segment path: relative, `/`-separated, non-empty components other than `.` and `..`,
/// no NUL, other control characters or backslash, at most [`MAX_PATH_BYTES`] bytes in all and
/// [`MAX_PATH_COMPONENT_BYTES`] per component. `field` names it in the error.
pub fn validate_segment_path(path: &str, field: &str) -> Result<(), ProtoError> {
    if path.is_empty() {
        return Err(invalid(field, "empty path"));
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(invalid(
            field,
            format!("path longer than {MAX_PATH_BYTES} bytes"),
        ));
    }
    if path.contains('\0') {
        return Err(invalid(field, "path contains NUL"));
    }
    if path.chars().any(char::is_control) {
        return Err(invalid(field, "path contains a control character"));
    }
    if path.contains('\\') {
        return Err(invalid(field, "path contains a backslash"));
    }
    if path.starts_with('/') {
        return Err(invalid(field, "path is absolute"));
    }
    for component in path.split('/') {
        match component {
            "" => return Err(invalid(field, "path has an empty component")),
            "." | ".." => {
                return Err(invalid(
                    field,
                    format!("path has a '{component}' component"),
                ))
            }
            c if c.len() > MAX_PATH_COMPONENT_BYTES => {
                return Err(invalid(
                    field,
                    format!("path component longer than {MAX_PATH_COMPONENT_BYTES} bytes"),
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

/// Checks that `s` is lowercase hex of even length (exactly `2 * bytes` long when `bytes` is
/// given, otherwise 2 to 128 characters). A bad digest is [`ProtoError::Malformed`] naming `field`.
pub fn validate_hex(s: &str, bytes: Option<usize>, field: &str) -> Result<(), ProtoError> {
    let len_ok = match bytes {
        Some(n) => s.len() == 2 * n,
        None => !s.is_empty() && s.len() <= 128 && s.len() % 2 == 0,
    };
    if !len_ok {
        return Err(ProtoError::Malformed(format!(
            "{field}: hex digest has a bad length ({})",
            s.len()
        )));
    }
    if !s
        .bytes()
        .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
    {
        return Err(ProtoError::Malformed(format!("{field}: not lowercase hex")));
    }
    Ok(())
}
