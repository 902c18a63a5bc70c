//! The command lines of `vpnlbd` and `vpnlbctl`: their clap definitions, here in the library so
//! that the programs and their documentation share one source.
//!
//! What clap has no place for (files, signals, environment, exit status) is kept as
//! [`Section`]s: the same text ends `--help` ([`after_help`]) and becomes the man pages' own
//! sections, so the two cannot drift apart.

pub mod vpnlbd;

/// Where an installed vpnlbd's configuration lives (`vpnlbd --config` has no default).
pub const CONFIG_FILE: &str = "/etc/vpnlb/vpnlb.toml";

/// A part of a program's documentation that clap has no field for: a man page section
/// (`FILES`, `EXIT STATUS`, ...) of terms and what each means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Section {
    /// The man page heading, upper case (`EXIT STATUS`).
    pub title: &'static str,
    /// `(term, text)`: a file, signal, variable or exit code, and what it is.
    pub items: &'static [(&'static str, &'static str)],
}

/// `--help`'s closing text: each section as a heading (`Exit status:`) and its items indented
/// under it, terms aligned.
pub fn after_help(sections: &[Section]) -> String {
    let mut out = String::new();
    for (i, section) in sections.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&heading(section.title));
        out.push_str(":\n");
        let width = section
            .items
            .iter()
            .map(|(t, _)| t.len())
            .max()
            .unwrap_or(0);
        for (term, text) in section.items {
            out.push_str(&format!("  {term:width$}  {text}\n"));
        }
    }
    // clap adds its own final newline.
    out.truncate(out.trim_end().len());
    out
}

/// `EXIT STATUS` as a help heading: `Exit status`.
fn heading(title: &str) -> String {
    let lower = title.to_lowercase();
    let mut chars = lower.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_help_aligns_terms_under_headings() {
        let sections = [
            Section {
                title: "EXIT STATUS",
                items: &[("0", "ok"), ("10", "bad")],
            },
            Section {
                title: "FILES",
                items: &[("/x", "the x")],
            },
        ];
        assert_eq!(
            after_help(&sections),
            "Exit status:\n  0   ok\n  10  bad\n\nFiles:\n  /x  the x"
        );
    }
}
