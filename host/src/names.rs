//! The rule for tenant names and task types, checked at every door (deploy, enqueue,
//! spawn) so that a task can always be matched to a module someone could deploy.

/// Longest tenant name or task type, in bytes (the schema checks the same).
pub const MAX_NAME_BYTES: usize = 200;

/// Checks a tenant name or task type: 1 to 200 bytes of ASCII letters, digits and
/// `. _ - : /`, starting with a letter or digit. `what` names the field in the error.
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    let ok_start = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._-:/".contains(c));
    if name.is_empty() || name.len() > MAX_NAME_BYTES || !ok_start || !ok_chars {
        return Err(format!(
            "{what} {name:?} is not valid: use 1 to {MAX_NAME_BYTES} ASCII letters, digits and . _ - : /, starting with a letter or digit"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_name;

    #[test]
    fn names() {
        assert!(check_name("task type", "crawler").is_ok());
        assert!(check_name("task type", "billing/v2.monthly").is_ok());
        for bad in ["", "-x", "has space", "quote'", "nul\0", &"x".repeat(201)] {
            assert!(check_name("task type", bad).is_err(), "{bad:?}");
        }
    }
}
