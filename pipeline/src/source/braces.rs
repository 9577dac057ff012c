//! Brace expansion of shard patterns (no filesystem or network access):
//! `train-{000000..000146}.tar`, `{a,b}` lists, several and nested braces.
use crate::{PipelineError, Result};

fn bad(pattern: &str, reason: &str) -> PipelineError {
    PipelineError::BadPattern { pattern: pattern.to_string(), reason: reason.to_string() }
}

/// Split `s` at top-level commas (commas not inside nested braces).
fn split_top_commas(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// Expand braces only (no filesystem access): `a-{000..002}.tar` → `a-000.tar, a-001.tar, a-002.tar`;
/// `{x,y}` lists; several and nested braces. Zero-padded ranges keep their width.
pub fn expand_braces(pattern: &str) -> Result<Vec<String>> {
    let Some(open) = pattern.find('{') else {
        if pattern.contains('}') {
            return Err(bad(pattern, "unmatched '}'"));
        }
        return Ok(vec![pattern.to_string()]);
    };
    let mut depth = 0i32;
    let mut close = None;
    for (i, c) in pattern[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    close = Some(open + i);
                    break;
                }
            }
            _ => {}
        }
    }
    let close = close.ok_or_else(|| bad(pattern, "unmatched '{'"))?;
    let (head, body, tail) = (&pattern[..open], &pattern[open + 1..close], &pattern[close + 1..]);
    let mut alternatives = Vec::new();
    let range = body.split_once("..").filter(|(a, b)| {
        !a.is_empty() && !b.is_empty() && a.chars().all(|c| c.is_ascii_digit()) && b.chars().all(|c| c.is_ascii_digit())
    });
    if let Some((a, b)) = range {
        let lo: u64 = a.parse().map_err(|_| bad(pattern, "range bound too large"))?;
        let hi: u64 = b.parse().map_err(|_| bad(pattern, "range bound too large"))?;
        let width = if (a.len() > 1 && a.starts_with('0')) || (b.len() > 1 && b.starts_with('0')) {
            a.len().max(b.len())
        } else {
            0
        };
        if hi.abs_diff(lo) > 10_000_000 {
            return Err(bad(pattern, "range longer than 10 million"));
        }
        let nums: Vec<u64> = if lo <= hi { (lo..=hi).collect() } else { (hi..=lo).rev().collect() };
        for n in nums {
            alternatives.push(format!("{n:0width$}"));
        }
    } else {
        let parts = split_top_commas(body);
        if parts.len() < 2 {
            return Err(bad(pattern, "braces need a range {000..009} or a list {a,b}"));
        }
        for p in parts {
            alternatives.extend(expand_braces(p)?);
        }
    }
    let tails = expand_braces(tail)?;
    let mut out = Vec::with_capacity(alternatives.len() * tails.len());
    for alt in &alternatives {
        for t in &tails {
            out.push(format!("{head}{alt}{t}"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn braces_ranges_and_lists() {
        assert_eq!(
            expand_braces("d/t-{000008..000011}.tar").unwrap(),
            vec!["d/t-000008.tar", "d/t-000009.tar", "d/t-000010.tar", "d/t-000011.tar"]
        );
        assert_eq!(
            expand_braces("{a,b}/x-{1..2}.tar").unwrap(),
            vec!["a/x-1.tar", "a/x-2.tar", "b/x-1.tar", "b/x-2.tar"]
        );
        assert_eq!(expand_braces("{9..11}").unwrap(), vec!["9", "10", "11"]);
        assert_eq!(expand_braces("{a,{b,c}d}").unwrap(), vec!["a", "bd", "cd"]);
        assert_eq!(expand_braces("plain.tar").unwrap(), vec!["plain.tar"]);
        assert!(matches!(expand_braces("x-{000..").unwrap_err(), PipelineError::BadPattern { .. }));
        assert!(matches!(expand_braces("x-{abc}").unwrap_err(), PipelineError::BadPattern { .. }));
    }
}
