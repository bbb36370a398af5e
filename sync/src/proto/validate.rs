//! Validation of peer-supplied names: node names, segment paths, hex digests.

use super::ProtoError;

/// Longest node name: `[a-z0-9][a-z0-9_-]{0,62}`.
pub const MAX_NODE_NAME_BYTES: usize = 63;
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

/// Checks a node name against `[a-z0-9][a-z0-9_-]{0,62}`; `field` names it in the error.
pub fn validate_node_name(name: &str, field: &str) -> Result<(), ProtoError> {
    let b = name.as_bytes();
    let Some(&first) = b.first() else {
        return Err(invalid(field, "empty node name"));
    };
    if b.len() > MAX_NODE_NAME_BYTES {
        return Err(invalid(
            field,
            format!("node name longer than {MAX_NODE_NAME_BYTES} bytes"),
        ));
    }
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return Err(invalid(field, "node name must start with [a-z0-9]"));
    }
    if !b
        .iter()
        .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-')
    {
        return Err(invalid(field, "node name may contain only [a-z0-9_-]"));
    }
    Ok(())
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
