//! Text normalisation, the same for utterances, template text and list values, so that the
//! matcher compares bytes: lower case, `’` as `'`, `-` and `_` as spaces (Whisper writes
//! "twenty-five", templates write `( |-)hour[s]`), punctuation dropped, one space between
//! words. Kept: letters, digits, `'` (what's), `%`, `°`, `/` (1/2), and `.`/`,` between digits.

/// Maps one character; `None` drops it, `Some(' ')` makes a word break.
fn map_char(c: char, prev: Option<char>, next: Option<char>) -> Option<char> {
    match c {
        '’' | '‘' | '`' | '\'' => Some('\''),
        '-' | '_' | '–' | '—' => Some(' '),
        '%' | '°' | '/' => Some(c),
        '.' | ',' => {
            let digit = |c: Option<char>| c.is_some_and(|c| c.is_ascii_digit());
            if digit(prev) && digit(next) {
                Some(c)
            } else {
                Some(' ')
            }
        }
        c if c.is_whitespace() => Some(' '),
        c if c.is_alphanumeric() => Some(c),
        // Anything else (?!:;"…) separates words.
        _ => Some(' '),
    }
}

/// An utterance, normalised, with the way back to the original text (for wildcards: the
/// message of "announce Dinner is ready" keeps its capital).
#[derive(Debug, Clone)]
pub struct Normalized {
    /// Normalised text: words separated by one space, no leading or trailing space.
    pub text: String,
    original: String,
    /// For each byte of `text`: the original byte range of the character it came from.
    map: Vec<(u32, u32)>,
}

impl Normalized {
    pub fn new(original: &str) -> Normalized {
        let chars: Vec<(usize, char)> = original.char_indices().collect();
        let mut text = String::with_capacity(original.len());
        let mut map = Vec::with_capacity(original.len());
        for (i, &(at, c)) in chars.iter().enumerate() {
            let prev = i.checked_sub(1).map(|j| chars[j].1);
            let next = chars.get(i + 1).map(|x| x.1);
            let end = chars.get(i + 1).map_or(original.len(), |x| x.0);
            let Some(m) = map_char(c, prev, next) else { continue };
            if m == ' ' {
                if text.is_empty() || text.ends_with(' ') {
                    continue;
                }
                text.push(' ');
                map.push((at as u32, end as u32));
                continue;
            }
            for l in m.to_lowercase() {
                let before = text.len();
                text.push(l);
                for _ in before..text.len() {
                    map.push((at as u32, end as u32));
                }
            }
        }
        if text.ends_with(' ') {
            text.pop();
            map.pop();
        }
        Normalized { text, original: original.to_string(), map }
    }

    /// The original text behind `text[start..end]`, trimmed of spaces and punctuation at
    /// its ends.
    pub fn original_span(&self, start: usize, end: usize) -> String {
        if start >= end || end > self.map.len() {
            return String::new();
        }
        let (a, _) = self.map[start];
        let (_, b) = self.map[end - 1];
        let s = &self.original[a as usize..b as usize];
        s.trim_matches(|c: char| c.is_whitespace() || (c.is_ascii_punctuation() && c != '%' && c != '\'')).to_string()
    }

    /// A copy with some byte ranges of `text` removed (skip words), keeping the map.
    pub fn without(&self, ranges: &[(usize, usize)]) -> Normalized {
        let mut text = String::new();
        let mut map = Vec::new();
        let mut last = 0;
        let push = |text: &mut String, map: &mut Vec<(u32, u32)>, from: usize, to: usize| {
            let piece = self.text[from..to].trim_matches(' ');
            if piece.is_empty() {
                return;
            }
            let offset = from + self.text[from..to].find(piece).unwrap_or(0);
            if !text.is_empty() {
                text.push(' ');
                map.push(self.map[offset.saturating_sub(1)]);
            }
            text.push_str(piece);
            map.extend_from_slice(&self.map[offset..offset + piece.len()]);
        };
        for &(a, b) in ranges {
            push(&mut text, &mut map, last, a);
            last = b;
        }
        push(&mut text, &mut map, last, self.text.len());
        Normalized { text, original: self.original.clone(), map }
    }
}

/// Normalises template text or a list value: the same mapping as utterances, but leading and
/// trailing spaces are kept (as one space each), because in a template they mark word
/// boundaries.
pub fn normalize_fragment(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    for (i, &c) in chars.iter().enumerate() {
        let prev = i.checked_sub(1).map(|j| chars[j]);
        let next = chars.get(i + 1).copied();
        match map_char(c, prev, next) {
            Some(' ') if out.ends_with(' ') => {}
            Some(' ') => out.push(' '),
            Some(m) => out.extend(m.to_lowercase()),
            None => {}
        }
    }
    out
}

/// Normalises a name or value completely (no leading or trailing space).
pub fn normalize_words(s: &str) -> String {
    Normalized::new(s).text
}

/// Finds skip words in `text` as whole words: (start, end) byte ranges, longest phrases first,
/// not overlapping. `only_edges` keeps just those at the start and at the end (repeatedly:
/// "um please turn on ..." loses both).
pub fn find_skip_words(text: &str, skip: &[String], only_edges: bool) -> Vec<(usize, usize)> {
    let bytes = text.as_bytes();
    let mut found: Vec<(usize, usize)> = Vec::new();
    let boundary_before = |i: usize| i == 0 || bytes[i - 1] == b' ';
    let boundary_after = |i: usize| i == bytes.len() || bytes[i] == b' ';
    // `skip` is sorted longest first by the caller.
    let mut i = 0;
    while i < bytes.len() {
        if boundary_before(i) {
            if let Some(w) = skip.iter().find(|w| text[i..].starts_with(w.as_str()) && boundary_after(i + w.len())) {
                found.push((i, i + w.len()));
                i += w.len();
                continue;
            }
        }
        i += 1;
    }
    if !only_edges {
        return found;
    }
    // Keep the runs touching the start and the end.
    let mut edges = Vec::new();
    let mut pos = 0;
    for &(a, b) in &found {
        if text[pos..a].trim().is_empty() {
            edges.push((a, b));
            pos = b;
        } else {
            break;
        }
    }
    let mut tail = Vec::new();
    let mut end = text.len();
    for &(a, b) in found.iter().rev() {
        if edges.contains(&(a, b)) {
            break;
        }
        if text[b..end].trim().is_empty() {
            tail.push((a, b));
            end = a;
        } else {
            break;
        }
    }
    tail.reverse();
    edges.extend(tail);
    edges
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utterances_normalise_case_punctuation_and_hyphens() {
        let n = Normalized::new("  What's the Temperature,  in the KITCHEN?  ");
        assert_eq!(n.text, "what's the temperature in the kitchen");
        assert_eq!(Normalized::new("Set a twenty-five minute timer.").text, "set a twenty five minute timer");
        assert_eq!(Normalized::new("Set it to 21.5°, please!").text, "set it to 21.5° please");
        assert_eq!(Normalized::new("Volume up by 20%.").text, "volume up by 20%");
        assert_eq!(Normalized::new("Turn on Mom’s lamp").text, "turn on mom's lamp");
        assert_eq!(Normalized::new("1,000 or 1, 2").text, "1,000 or 1 2");
        assert_eq!(Normalized::new("...").text, "");
    }

    #[test]
    fn original_spans_keep_case() {
        let n = Normalized::new("Announce: Dinner is READY!");
        let start = n.text.find("dinner").unwrap();
        assert_eq!(n.original_span(start, n.text.len()), "Dinner is READY");
    }

    #[test]
    fn fragments_keep_their_edge_spaces() {
        assert_eq!(normalize_fragment(" On "), " on ");
        assert_eq!(normalize_fragment("-"), " ");
        assert_eq!(normalize_fragment("Mom’s "), "mom's ");
        assert_eq!(normalize_fragment("Light"), "light");
    }

    #[test]
    fn skip_words_as_whole_words_or_at_the_edges() {
        let mut skip = vec!["please".to_string(), "um".to_string(), "could you".to_string()];
        skip.sort_by_key(|w| std::cmp::Reverse(w.len()));
        let text = "um could you turn on the umbrella light please";
        let all = find_skip_words(text, &skip, false);
        assert_eq!(all.len(), 3, "umbrella is not um: {all:?}");
        let n = Normalized::new(text).without(&all);
        assert_eq!(n.text, "turn on the umbrella light");

        let text = "announce please come down um";
        let edges = find_skip_words(text, &skip, true);
        let n = Normalized::new(text).without(&edges);
        assert_eq!(n.text, "announce please come down");
        let start = n.text.find("please").unwrap();
        assert_eq!(n.original_span(start, n.text.len()), "please come down");
    }
}
