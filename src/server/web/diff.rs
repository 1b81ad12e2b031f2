//! A line diff between two versions of a file: the longest common
//! subsequence of their lines, with the rest marked removed or added.

/// One line of a diff.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// In both versions.
    Same(&'a str),
    /// Only in the old one.
    Removed(&'a str),
    /// Only in the new one.
    Added(&'a str),
}

/// Above this many line pairs the table of common subsequences would be
/// too large; the diff is then "every old line removed, every new line
/// added" around the common head and tail.
const MAX_CELLS: usize = 4_000_000;

/// The lines of `old` and `new`, in order, each marked.
pub fn lines<'a>(old: &'a str, new: &'a str) -> Vec<Line<'a>> {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    // The common head and tail need no table.
    let head = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let tail = a[head..]
        .iter()
        .rev()
        .zip(b[head..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (ma, mb) = (&a[head..a.len() - tail], &b[head..b.len() - tail]);
    let mut out: Vec<Line<'a>> = a[..head].iter().map(|l| Line::Same(l)).collect();
    if ma.len().saturating_mul(mb.len()) > MAX_CELLS {
        out.extend(ma.iter().map(|l| Line::Removed(l)));
        out.extend(mb.iter().map(|l| Line::Added(l)));
    } else {
        // lcs[i][j]: the longest common subsequence of ma[i..] and mb[j..].
        let w = mb.len() + 1;
        let mut lcs = vec![0u32; (ma.len() + 1) * w];
        for i in (0..ma.len()).rev() {
            for j in (0..mb.len()).rev() {
                lcs[i * w + j] = if ma[i] == mb[j] {
                    lcs[(i + 1) * w + j + 1] + 1
                } else {
                    lcs[(i + 1) * w + j].max(lcs[i * w + j + 1])
                };
            }
        }
        let (mut i, mut j) = (0, 0);
        while i < ma.len() && j < mb.len() {
            if ma[i] == mb[j] {
                out.push(Line::Same(ma[i]));
                i += 1;
                j += 1;
            } else if lcs[(i + 1) * w + j] >= lcs[i * w + j + 1] {
                out.push(Line::Removed(ma[i]));
                i += 1;
            } else {
                out.push(Line::Added(mb[j]));
                j += 1;
            }
        }
        out.extend(ma[i..].iter().map(|l| Line::Removed(l)));
        out.extend(mb[j..].iter().map(|l| Line::Added(l)));
    }
    out.extend(a[a.len() - tail..].iter().map(|l| Line::Same(l)));
    out
}

#[cfg(test)]
mod tests {
    use super::Line::*;
    use super::*;

    #[test]
    fn a_changed_line_is_removed_then_added() {
        let d = lines("a\nb\nc\n", "a\nB\nc\nd\n");
        assert_eq!(
            d,
            vec![Same("a"), Removed("b"), Added("B"), Same("c"), Added("d")]
        );
    }

    #[test]
    fn the_diff_rebuilds_both_versions() {
        let old = "x\ny\nz\nx\ny\n";
        let new = "y\nx\nz\ny\nq\n";
        let d = lines(old, new);
        let back_old: Vec<&str> = d
            .iter()
            .filter_map(|l| match l {
                Same(t) | Removed(t) => Some(*t),
                Added(_) => None,
            })
            .collect();
        let back_new: Vec<&str> = d
            .iter()
            .filter_map(|l| match l {
                Same(t) | Added(t) => Some(*t),
                Removed(_) => None,
            })
            .collect();
        assert_eq!(back_old, old.lines().collect::<Vec<_>>());
        assert_eq!(back_new, new.lines().collect::<Vec<_>>());
        // The longest common subsequence of these has three lines.
        assert_eq!(d.iter().filter(|l| matches!(l, Same(_))).count(), 3);
        assert_eq!(lines("", "a\n"), vec![Added("a")]);
        assert_eq!(lines("a\n", ""), vec![Removed("a")]);
    }
}
