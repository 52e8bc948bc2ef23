//! Topic names, topic filters and matching (MQTT sections 4.7 and 4.8.2).

/// Why a topic name or filter is invalid.
pub type Invalid = &'static str;

/// Checks a topic name used in PUBLISH: not empty, no wildcards.
pub fn valid_name(topic: &str) -> Result<(), Invalid> {
    if topic.is_empty() {
        return Err("empty topic name");
    }
    if topic.bytes().any(|b| b == b'+' || b == b'#') {
        return Err("wildcard in topic name");
    }
    Ok(())
}

/// Checks a topic filter (without any `$share/` prefix): not empty, `#` only as the whole last
/// level, `+` only as a whole level.
pub fn valid_filter(filter: &str) -> Result<(), Invalid> {
    if filter.is_empty() {
        return Err("empty topic filter");
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('#') && (level != "#" || levels.peek().is_some()) {
            return Err("'#' must be the whole last level");
        }
        if level.contains('+') && level != "+" {
            return Err("'+' must be a whole level");
        }
    }
    Ok(())
}

/// A subscription filter split into its share group (for `$share/GROUP/FILTER`) and the filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedFilter<'a> {
    /// The share group name, when this is a shared subscription.
    pub group: Option<&'a str>,
    /// The topic filter proper.
    pub filter: &'a str,
}

/// Parses and validates a subscription filter, including the shared-subscription form.
pub fn parse_filter(raw: &str) -> Result<SharedFilter<'_>, Invalid> {
    if let Some(rest) = raw.strip_prefix("$share/") {
        let (group, filter) = rest.split_once('/').ok_or("shared subscription without a filter")?;
        if group.is_empty() || group.contains(['+', '#']) {
            return Err("invalid share group name");
        }
        valid_filter(filter)?;
        Ok(SharedFilter { group: Some(group), filter })
    } else {
        valid_filter(raw)?;
        Ok(SharedFilter { group: None, filter: raw })
    }
}

/// Whether `filter` matches `topic`. Topics starting with `$` are not matched by a filter whose
/// first level is a wildcard.
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        for ok in ["#", "+", "a/#", "a/+/b", "+/+", "/", "a//b", "$SYS/#"] {
            assert!(valid_filter(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a#", "a/#/b", "a+/b", "#/a", "a/b+"] {
            assert!(valid_filter(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn shared() {
        assert_eq!(parse_filter("$share/g/a/+").unwrap(), SharedFilter { group: Some("g"), filter: "a/+" });
        assert!(parse_filter("$share/g").is_err());
        assert!(parse_filter("$share//a").is_err());
        assert!(parse_filter("$share/g+/a").is_err());
        assert_eq!(parse_filter("a/b").unwrap().group, None);
    }

    #[test]
    fn matching() {
        assert!(matches("a/+/c", "a/b/c"));
        assert!(!matches("a/+/c", "a/b/d"));
        assert!(matches("a/#", "a"));
        assert!(matches("a/#", "a/b/c"));
        assert!(matches("#", "a/b"));
        assert!(!matches("#", "$SYS/x"));
        assert!(!matches("+/x", "$SYS/x"));
        assert!(matches("$SYS/#", "$SYS/x"));
        assert!(matches("+/+", "/a"));
        assert!(!matches("a/b", "a/b/c"));
        assert!(!matches("a/+", "a"));
        assert!(matches("+", ""));
    }
}
