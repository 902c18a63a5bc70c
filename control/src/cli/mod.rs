//! The command lines of `vpnlbd` and `vpnlbctl`: their clap definitions, here in the library so
//! that the two programs and the generator of man pages and shell completions
//! (`vpnlb-gendoc`, [`docs`]) share one source.
//!
//! [`command_lines`] lists a program's whole grammar (`gateway NAME weight N`) for `--help` and
//! the man pages.
//!
//! What clap has no place for (files, signals, environment, exit status) is kept as
//! [`Section`]s: the same text ends `--help` ([`after_help`]) and becomes the man pages' own
//! sections, so the two cannot drift apart.

pub mod docs;
pub mod table;
pub mod vpnlbctl;
pub mod vpnlbd;

use clap::Command;

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

/// One line of a program's command grammar: its words and arguments as typed
/// (`gateway NAME weight N`, `replay --config FILE --in PORT=CAPTURE... --out-dir DIR
/// [--affinity]`), what it does, and its own options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandLine {
    pub usage: String,
    pub about: String,
    /// `(--flag VALUE, help)` of the options the command itself takes (not the global ones).
    pub options: Vec<(String, String)>,
}

/// Every command line under `cmd`, depth first, in definition order; hidden commands (the
/// test-only `debug`) and clap's `help` are left out.
pub fn command_lines(cmd: &Command) -> Vec<CommandLine> {
    let mut out = Vec::new();
    walk(cmd, &mut Vec::new(), &mut out);
    out
}

fn walk(cmd: &Command, words: &mut Vec<String>, out: &mut Vec<CommandLine>) {
    for sub in cmd.get_subcommands() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        let depth = words.len();
        words.push(sub.get_name().to_string());
        let own_options: Vec<&clap::Arg> = sub
            .get_arguments()
            .filter(|a| !a.is_global_set() && !a.is_hide_set() && !is_builtin(a))
            .collect();
        for arg in own_options.iter().filter(|a| a.is_positional()) {
            words.push(usage_of(arg));
        }
        if sub.has_subcommands() {
            walk(sub, words, out);
        } else {
            let mut usage = words.clone();
            usage.extend(
                own_options
                    .iter()
                    .filter(|a| !a.is_positional())
                    .map(|a| usage_of(a)),
            );
            out.push(CommandLine {
                usage: usage.join(" "),
                about: sub.get_about().map(ToString::to_string).unwrap_or_default(),
                options: own_options
                    .iter()
                    .filter(|a| !a.is_positional())
                    .map(|a| {
                        let help = a.get_help().map(ToString::to_string).unwrap_or_default();
                        (flag_and_value(a), help)
                    })
                    .collect(),
            });
        }
        words.truncate(depth);
    }
}

/// `--help` and `--version`, which every command has.
fn is_builtin(arg: &clap::Arg) -> bool {
    matches!(arg.get_id().as_str(), "help" | "version")
}

/// `--out-dir DIR`, `--affinity`, `-o FORMAT`.
fn flag_and_value(arg: &clap::Arg) -> String {
    let flag = match (arg.get_long(), arg.get_short()) {
        (Some(long), _) => format!("--{long}"),
        (None, Some(short)) => format!("-{short}"),
        (None, None) => arg.get_id().to_string(),
    };
    let takes_value = arg.get_num_args().is_some_and(|n| n.takes_values())
        || !matches!(
            arg.get_action(),
            clap::ArgAction::SetTrue | clap::ArgAction::SetFalse | clap::ArgAction::Count
        );
    if takes_value {
        format!("{flag} {}", value_name(arg))
    } else {
        flag
    }
}

/// How an argument reads in a command line: `NAME`, `[CLIENT]`, `--in PORT=CAPTURE...`,
/// `[--affinity]`.
fn usage_of(arg: &clap::Arg) -> String {
    let text = if arg.is_positional() {
        value_name(arg)
    } else {
        flag_and_value(arg)
    };
    let repeated = matches!(arg.get_action(), clap::ArgAction::Append);
    let text = if repeated { format!("{text}...") } else { text };
    if arg.is_required_set() {
        text
    } else {
        format!("[{text}]")
    }
}

fn value_name(arg: &clap::Arg) -> String {
    arg.get_value_names()
        .and_then(|names| names.first())
        .map_or_else(
            || arg.get_id().to_string().to_uppercase(),
            ToString::to_string,
        )
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
    fn command_lines_are_the_grammar() {
        let lines = command_lines(&vpnlbctl::command());
        let usages: Vec<&str> = lines.iter().map(|l| l.usage.as_str()).collect();
        assert_eq!(
            usages,
            [
                "show stats",
                "show ports",
                "show workers",
                "show gateways",
                "show health",
                "show vrrp",
                "show sync",
                "show redirect",
                "show classes",
                "show drops",
                "show neighbors",
                "show affinity [CLIENT]",
                "gateway NAME drain",
                "gateway NAME enable",
                "gateway NAME disable",
                "gateway NAME weight N",
                "affinity flush [CLIENT]",
                "stats prometheus",
                "reload",
                "ping",
            ]
        );
        assert!(lines.iter().all(|l| !l.about.is_empty()), "{lines:?}");

        let lines = command_lines(&vpnlbd::command());
        let usages: Vec<&str> = lines.iter().map(|l| l.usage.as_str()).collect();
        assert_eq!(
            usages,
            [
                "replay --config FILE --in PORT=CAPTURE... --out-dir DIR [--affinity]",
                "check --config FILE",
            ]
        );
        assert_eq!(lines[0].options.len(), 4, "{lines:?}");
        assert_eq!(lines[0].options[3].0, "--affinity");
    }

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
