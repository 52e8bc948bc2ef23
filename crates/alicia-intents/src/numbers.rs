//! Numbers in utterances: digits ("25", "21.5", "1,000") and English number words ("twenty
//! five", "a hundred", "one hundred and five", "twenty one point five"). Whisper writes either,
//! so every range list accepts both, as Home Assistant's does (it uses unicode-rbnf to spell
//! every number of a range; parsing the words is cheaper than building that trie).

fn ones(w: &str) -> Option<u32> {
    Some(match w {
        "one" => 1,
        "two" => 2,
        "three" => 3,
        "four" => 4,
        "five" => 5,
        "six" => 6,
        "seven" => 7,
        "eight" => 8,
        "nine" => 9,
        _ => return None,
    })
}

fn teens(w: &str) -> Option<u32> {
    Some(match w {
        "ten" => 10,
        "eleven" => 11,
        "twelve" => 12,
        "thirteen" => 13,
        "fourteen" => 14,
        "fifteen" => 15,
        "sixteen" => 16,
        "seventeen" => 17,
        "eighteen" => 18,
        "nineteen" => 19,
        _ => return None,
    })
}

fn tens(w: &str) -> Option<u32> {
    Some(match w {
        "twenty" => 20,
        "thirty" => 30,
        "forty" | "fourty" => 40,
        "fifty" => 50,
        "sixty" => 60,
        "seventy" => 70,
        "eighty" => 80,
        "ninety" => 90,
        _ => return None,
    })
}

#[derive(Clone, Copy, PartialEq)]
enum Last {
    Start,
    A,
    Ones,
    Teen,
    Tens,
    Hundred,
    Thousand,
    And,
    Zero,
}

/// Every way the words at the start of `words` read as a number: (words used, value), the
/// longest first. "twenty five minutes" gives (2, 25) and (1, 20).
pub fn parse_words(words: &[&str]) -> Vec<(usize, f64)> {
    let mut out = Vec::new();
    let mut total: u64 = 0;
    let mut current: u64 = 0;
    let mut last = Last::Start;
    let mut i = 0;
    while i < words.len() && i < 12 {
        let w = words[i];
        let can_start_group = matches!(last, Last::Start | Last::Hundred | Last::Thousand | Last::And);
        if let Some(n) = ones(w) {
            if !(can_start_group || last == Last::Tens) {
                break;
            }
            current += u64::from(n);
            last = Last::Ones;
        } else if let Some(n) = teens(w) {
            if !can_start_group {
                break;
            }
            current += u64::from(n);
            last = Last::Teen;
        } else if let Some(n) = tens(w) {
            if !can_start_group {
                break;
            }
            current += u64::from(n);
            last = Last::Tens;
        } else if w == "zero" && last == Last::Start {
            last = Last::Zero;
        } else if w == "a" && last == Last::Start {
            last = Last::A;
            i += 1;
            continue;
        } else if w == "hundred" && (last == Last::A || (last == Last::Ones && current % 100 < 10)) {
            current = if last == Last::A { 100 } else { (current - current % 100) + (current % 100) * 100 };
            last = Last::Hundred;
        } else if w == "thousand" && (last == Last::A || (current > 0 && total == 0)) {
            total = if last == Last::A { 1000 } else { current * 1000 };
            current = 0;
            last = Last::Thousand;
        } else if w == "and" && matches!(last, Last::Hundred | Last::Thousand) {
            last = Last::And;
            i += 1;
            continue;
        } else if w == "point" && !matches!(last, Last::Start | Last::A | Last::And) {
            // Decimals: each following digit word.
            let whole = (total + current) as f64;
            let mut scale = 0.1;
            let mut frac = 0.0;
            let mut j = i + 1;
            while j < words.len() && j < i + 4 {
                let d = if words[j] == "zero" || words[j] == "oh" { Some(0) } else { ones(words[j]) };
                let Some(d) = d else { break };
                frac += f64::from(d) * scale;
                scale /= 10.0;
                j += 1;
                out.push((j, whole + frac));
            }
            break;
        } else {
            break;
        }
        i += 1;
        out.push((i, (total + current) as f64));
    }
    out.reverse();
    out
}

/// A number written in digits at the start of `text`: (bytes used, value). Accepts `-`, a
/// decimal point or comma followed by digits, and thousands separators ("1,000").
pub fn parse_digits(text: &str) -> Option<(usize, f64)> {
    let b = text.as_bytes();
    let mut i = 0;
    let negative = b.first() == Some(&b'-');
    if negative {
        i += 1;
    }
    let start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    if i == start {
        return None;
    }
    let mut digits: String = text[start..i].to_string();
    // "1,000": a comma followed by exactly three digits groups thousands.
    while i + 3 < b.len() + 1 && b.get(i) == Some(&b',') && b[i + 1..].iter().take(3).all(u8::is_ascii_digit) {
        let end = i + 4;
        if end <= b.len() && (end == b.len() || !b[end].is_ascii_digit()) {
            digits.push_str(&text[i + 1..end]);
            i = end;
        } else {
            break;
        }
    }
    if i + 1 < b.len() && (b[i] == b'.' || b[i] == b',') && b[i + 1].is_ascii_digit() {
        digits.push('.');
        i += 1;
        let f = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        digits.push_str(&text[f..i]);
    }
    let v: f64 = digits.parse().ok()?;
    Some((i, if negative { -v } else { v }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn best(s: &str) -> Option<(usize, f64)> {
        let words: Vec<&str> = s.split(' ').collect();
        parse_words(&words).into_iter().next()
    }

    #[test]
    fn number_words() {
        assert_eq!(best("five"), Some((1, 5.0)));
        assert_eq!(best("twenty five minutes"), Some((2, 25.0)));
        assert_eq!(best("fifteen"), Some((1, 15.0)));
        assert_eq!(best("a hundred"), Some((2, 100.0)));
        assert_eq!(best("one hundred and five"), Some((4, 105.0)));
        assert_eq!(best("two hundred thirty"), Some((3, 230.0)));
        assert_eq!(best("a thousand"), Some((2, 1000.0)));
        assert_eq!(best("two thousand five hundred"), Some((4, 2500.0)));
        assert_eq!(best("twenty one point five degrees"), Some((4, 21.5)));
        assert_eq!(best("zero"), Some((1, 0.0)));
        assert_eq!(best("forty"), Some((1, 40.0)));
        // Not numbers, or only partly.
        assert_eq!(best("a minute"), None);
        assert_eq!(best("and five"), None);
        assert_eq!(best("five twenty"), Some((1, 5.0)));
        assert_eq!(best("twenty twenty"), Some((1, 20.0)));
        assert_eq!(best("one hundred and"), Some((2, 100.0)));
        assert_eq!(best("lamp"), None);
    }

    #[test]
    fn all_readings_longest_first() {
        let words = ["twenty", "five", "minutes"];
        assert_eq!(parse_words(&words), vec![(2, 25.0), (1, 20.0)]);
    }

    #[test]
    fn digits() {
        assert_eq!(parse_digits("25"), Some((2, 25.0)));
        assert_eq!(parse_digits("50%"), Some((2, 50.0)));
        assert_eq!(parse_digits("21.5°"), Some((4, 21.5)));
        assert_eq!(parse_digits("21,5 degrees"), Some((4, 21.5)));
        assert_eq!(parse_digits("1,000 lumens"), Some((5, 1000.0)));
        assert_eq!(parse_digits("-3"), Some((2, -3.0)));
        assert_eq!(parse_digits("x1"), None);
        assert_eq!(parse_digits("-"), None);
    }
}
