//! `*`/`?` wildcard matching, shared by key-file globs (paths, case-sensitive: init-sshd
//! install, and the webhook deciding which volumes a glob can reach) and `from=` host patterns
//! (addresses, ASCII case-insensitive).

/// `*` matches any run, `?` one byte; iterative with single-star backtracking,
/// so hostile patterns cost O(pattern × text), never exponential time.
pub fn matches(pattern: &[u8], text: &[u8], fold_case: bool) -> bool {
    let same = |a: u8, b: u8| {
        if fold_case {
            a.eq_ignore_ascii_case(&b)
        } else {
            a == b
        }
    };
    let (mut p, mut t) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while let Some(&tc) = text.get(t) {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || same(c, tc) => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern
        .get(p..)
        .is_some_and(|rest| rest.iter().all(|&c| c == b'*'))
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn stars_questions_and_case() {
        assert!(matches(b"*", b"", false));
        assert!(matches(b"a*c", b"abbbc", false));
        assert!(matches(b"a?c", b"abc", false));
        assert!(!matches(b"a?c", b"ac", false));
        assert!(matches(b"*.example.org", b"x.EXAMPLE.org", true));
        assert!(!matches(b"*.example.org", b"x.EXAMPLE.org", false));
        assert!(!matches(b"abc", b"abcd", false));
        // Many stars against a long mismatch stays fast (no exponential backtracking).
        let text = vec![b'a'; 4096];
        assert!(!matches(b"*a*a*a*a*a*a*b", &text, false));
    }
}
