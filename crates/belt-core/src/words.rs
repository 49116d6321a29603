//! English for counts and roles in what belt writes for people: "1 agent", "2 agents",
//! "an analyst"; and text cut to a size without splitting a character.
//!
//! ```
//! use belt_core::words;
//! assert_eq!(words::count(1, "agent"), "1 agent");
//! assert_eq!(words::count(3, "agent"), "3 agents");
//! assert_eq!(words::count_irregular(2, "synthesis", "syntheses"), "2 syntheses");
//! assert_eq!(words::with_article("analyst"), "an analyst");
//! assert_eq!(words::with_article("an analyst"), "an analyst");
//! assert_eq!(words::with_article("user researcher"), "a user researcher");
//! assert_eq!(words::cut("héllo", 2), "h");
//! assert_eq!(words::cut("abc", 10), "abc");
//! assert_eq!(words::seconds(std::time::Duration::from_millis(1500)), "1.5 s");
//! assert_eq!(words::seconds(std::time::Duration::from_secs(600)), "600 s");
//! assert_eq!(words::seconds(std::time::Duration::from_millis(250)), "250 ms");
//! ```

/// At most `max` bytes of `s`, cut at a character boundary (never inside a UTF-8
/// sequence): for tool results, log lines, span attributes.
pub fn cut(s: &str, max: usize) -> &str {
    &s[..s.floor_char_boundary(max)]
}

/// A duration as people write it: whole seconds without decimals ("600 s"), else one
/// decimal ("1.5 s"); under a second, milliseconds ("250 ms").
pub fn seconds(d: std::time::Duration) -> String {
    if d.as_secs() == 0 {
        format!("{} ms", d.as_millis())
    } else if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// `n` and the noun, plural with an `s` unless `n` is 1.
pub fn count(n: u64, noun: &str) -> String {
    match n {
        1 => format!("1 {noun}"),
        n => format!("{n} {noun}s"),
    }
}

/// `n` and the noun, for nouns whose plural is not an added `s`.
pub fn count_irregular(n: u64, singular: &str, plural: &str) -> String {
    match n {
        1 => format!("1 {singular}"),
        n => format!("{n} {plural}"),
    }
}

/// The phrase with "a" or "an" before it, unless it already opens with an article or a
/// determiner ("the", "an", "one", "your"…), as a role written by a person often does.
pub fn with_article(phrase: &str) -> String {
    let phrase = phrase.trim();
    let first = phrase.split_whitespace().next().unwrap_or_default();
    // Lowercased on the stack when the word is short ASCII (the usual case: one word per
    // worker of every cascade); Unicode's lowercasing otherwise ("İ" becomes "i̇").
    let mut stack = [0u8; 16];
    let owned;
    let lower: &str = match stack.get_mut(..first.len()) {
        Some(buf) if first.is_ascii() => {
            buf.copy_from_slice(first.as_bytes());
            buf.make_ascii_lowercase();
            std::str::from_utf8(buf).unwrap_or_default()
        }
        _ => {
            owned = first.to_lowercase();
            &owned
        }
    };
    if phrase.is_empty() || DETERMINERS.contains(&lower) {
        return phrase.to_string();
    }
    let article = article(lower);
    let mut out = String::with_capacity(article.len() + 1 + phrase.len());
    out.push_str(article);
    out.push(' ');
    out.push_str(phrase);
    out
}

const DETERMINERS: &[&str] = &["a", "an", "the", "one", "this", "that", "your", "our", "my", "each", "every"];

/// "an" before a vowel sound, judged from the spelling: vowels, less the words that open
/// with a "y" or "w" sound (user, unit, euro, one), plus a silent "h" (hour, honest).
fn article(word: &str) -> &'static str {
    const AS_CONSONANT: &[&str] = &["uni", "use", "usu", "uti", "eu", "one", "once", "ubiq"];
    const SILENT_H: &[&str] = &["hour", "honest", "honor", "honour", "heir"];
    let vowel = word.starts_with(['a', 'e', 'i', 'o', 'u']);
    let an = (vowel && !AS_CONSONANT.iter().any(|p| word.starts_with(p)))
        || SILENT_H.iter().any(|p| word.starts_with(p));
    if an { "an" } else { "a" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_singular_at_one_only() {
        assert_eq!(count(0u64, "step"), "0 steps");
        assert_eq!(count(1u64, "step"), "1 step");
        assert_eq!(count(2, "call"), "2 calls");
        assert_eq!(count_irregular(1u64, "synthesis", "syntheses"), "1 synthesis");
    }

    #[test]
    fn articles_follow_the_sound_of_the_first_word() {
        for (role, want) in [
            ("analyst", "an analyst"),
            ("Editor", "an Editor"),
            ("risk analyst", "a risk analyst"),
            ("user researcher", "a user researcher"),
            ("European historian", "a European historian"),
            ("honest broker", "an honest broker"),
            ("historian", "a historian"),
            ("an editor who plans", "an editor who plans"),
            ("the critic", "the critic"),
            ("THE critic", "THE critic"),
            ("internationalization expert", "an internationalization expert"),
            ("Underwriter", "an Underwriter"),
            ("İstanbul guide", "an İstanbul guide"),
            ("Ölçek planner", "a Ölçek planner"),
            ("  ", ""),
        ] {
            assert_eq!(with_article(role), want, "{role:?}");
        }
    }
}
