//! Man pages and shell completions from the clap definitions (`vpnlb-gendoc DIR`).
//!
//! clap_mangen renders the title, name, synopsis, description and options; the commands are
//! listed here as whole command lines (`gateway NAME weight N`), because clap_mangen would
//! refer to one page per subcommand (`vpnlbctl-show(8)`) that nobody installs; the
//! [`Section`]s follow (files, signals, environment, exit status, see also).

use std::io;
use std::path::{Path, PathBuf};

use clap::Command;
use clap_complete::Shell;
use clap_mangen::roff::{bold, italic, roman, Inline, Roff};
use clap_mangen::Man;

use super::{command_lines, Section};

/// The manual section of both pages: system administration (vpnlbctl needs the daemon's
/// root-owned socket, or its read-only one's group).
pub const MAN_SECTION: &str = "8";

/// The shells completions are written for.
pub const SHELLS: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

/// A man page (groff `man` macros) for `cmd`, with its command lines and `sections`.
pub fn man_page(cmd: &Command, sections: &[Section]) -> io::Result<String> {
    let man = Man::new(cmd.clone())
        .section(MAN_SECTION)
        .manual("System Administration");
    let rendered = |render: &dyn Fn(&mut Vec<u8>) -> io::Result<()>| -> io::Result<String> {
        let mut buf = Vec::new();
        render(&mut buf)?;
        String::from_utf8(buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    };
    let parts = [
        rendered(&|w| man.render_title(w))?,
        rendered(&|w| man.render_name_section(w))?,
        rendered(&|w| man.render_synopsis_section(w))?,
        rendered(&|w| man.render_description_section(w))?,
        rendered(&|w| man.render_options_section(w))?,
        rendered(&|w| own_sections(cmd, sections).to_writer(w))?,
        rendered(&|w| man.render_version_section(w))?,
    ];
    // Every part starts with the same roff preamble (string definitions); it is kept once.
    let preamble = parts[0].find(".TH").map_or("", |at| &parts[0][..at]);
    let mut page = preamble.to_string();
    for part in &parts {
        page.push_str(part.strip_prefix(preamble).unwrap_or(part));
    }
    Ok(page)
}

/// COMMANDS (every command line, its options indented under it) and `sections`.
fn own_sections(cmd: &Command, sections: &[Section]) -> Roff {
    let mut roff = Roff::new();
    let lines = command_lines(cmd);
    if !lines.is_empty() {
        roff.control("SH", ["COMMANDS"]);
        for line in &lines {
            roff.control("TP", []);
            roff.text(usage_inlines(&line.usage));
            roff.text([roman(line.about.as_str())]);
            if !line.options.is_empty() {
                roff.control("RS", []);
                for (flag, help) in &line.options {
                    roff.control("TP", []);
                    roff.text(usage_inlines(flag));
                    roff.text([roman(help.as_str())]);
                }
                roff.control("RE", []);
            }
        }
    }
    for section in sections {
        roff.control("SH", [section.title]);
        for (term, text) in section.items {
            roff.control("TP", []);
            roff.text([bold(*term)]);
            roff.text([roman(*text)]);
        }
    }
    roff
}

/// Words in bold, upper-case arguments (`NAME`, `[CLIENT]`, `PORT=CAPTURE...`) in italics, as
/// man pages set synopses.
fn usage_inlines(usage: &str) -> Vec<Inline> {
    let mut out = Vec::new();
    for (i, word) in usage.split(' ').enumerate() {
        if i > 0 {
            out.push(roman(" "));
        }
        let is_argument = word
            .trim_matches(|c| c == '[' || c == ']' || c == '.')
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_uppercase());
        out.push(if is_argument {
            italic(word)
        } else {
            bold(word)
        });
    }
    out
}

/// A program whose documentation is generated: its name, clap command and extra sections.
pub struct Program {
    pub name: &'static str,
    pub command: Command,
    pub sections: &'static [Section],
}

/// vpnlbd and vpnlbctl.
pub fn programs() -> [Program; 2] {
    [
        Program {
            name: "vpnlbd",
            command: super::vpnlbd::command(),
            sections: super::vpnlbd::SECTIONS,
        },
        Program {
            name: "vpnlbctl",
            command: super::vpnlbctl::command(),
            sections: super::vpnlbctl::SECTIONS,
        },
    ]
}

/// `cmd` for the completion generators, without its hidden subcommands (vpnlbctl's test-only
/// `debug`): clap_complete offers hidden subcommands, and clap cannot remove one, so the top
/// level is built anew with the rest. (Only top-level subcommands are hidden.)
fn without_hidden_subcommands(name: &'static str, cmd: &Command) -> Command {
    let mut out = Command::new(name)
        .disable_help_subcommand(true)
        .args(cmd.get_arguments().cloned())
        .subcommands(cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
    if let Some(about) = cmd.get_about() {
        out = out.about(about.clone());
    }
    if cmd.get_version().is_some() {
        out = out.version(env!("CARGO_PKG_VERSION"));
    }
    out
}

/// Writes into `dir` (which must exist), for each program: `NAME.8`, and the completions
/// `NAME.bash`, `_NAME` (zsh) and `NAME.fish`. Returns the files written.
pub fn write_all(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for program in programs() {
        let name = program.name;
        let path = dir.join(format!("{name}.{MAN_SECTION}"));
        std::fs::write(&path, man_page(&program.command, program.sections)?)?;
        written.push(path);
        for shell in SHELLS {
            let mut cmd = without_hidden_subcommands(name, &program.command);
            written.push(clap_complete::generate_to(shell, &mut cmd, name, dir)?);
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_named_as_their_commands() {
        for program in programs() {
            assert_eq!(program.name, program.command.get_name());
        }
    }

    /// What `vpnlb-gendoc DIR` writes: both man pages with their sections, and completions
    /// that know the commands.
    #[test]
    fn generates_man_pages_and_completions_into_a_directory() {
        let dir = std::env::temp_dir().join(format!("vpnlb-gendoc-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let written = write_all(&dir).unwrap();
        let mut names: Vec<String> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "_vpnlbctl",
                "_vpnlbd",
                "vpnlbctl.8",
                "vpnlbctl.bash",
                "vpnlbctl.fish",
                "vpnlbd.8",
                "vpnlbd.bash",
                "vpnlbd.fish"
            ]
        );
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();

        let page = read("vpnlbd.8");
        assert!(page.starts_with(".ie \\n(.g"), "{page}");
        assert_eq!(page.matches(".ie \\n(.g").count(), 1, "one preamble");
        assert!(page.contains(".TH vpnlbd 8"), "{page}");
        for section in [
            ".SH NAME",
            ".SH SYNOPSIS",
            ".SH DESCRIPTION",
            ".SH OPTIONS",
            ".SH COMMANDS",
            ".SH SIGNALS",
            ".SH FILES",
            ".SH ENVIRONMENT",
            ".SH \"EXIT STATUS\"",
            ".SH \"SEE ALSO\"",
        ] {
            assert!(page.contains(section), "vpnlbd.8 has no {section}:\n{page}");
        }
        for text in [
            "SIGHUP",
            "SIGTERM, SIGINT",
            "/etc/vpnlb/vpnlb.toml",
            "/run/vpnlb/vpnlbd.sock",
            "\\-\\-config",
        ] {
            assert!(page.contains(text), "vpnlbd.8 has no {text}:\n{page}");
        }

        let page = read("vpnlbctl.8");
        assert!(page.contains(".TH vpnlbctl 8"), "{page}");
        for section in [
            ".SH DESCRIPTION",
            ".SH OPTIONS",
            ".SH COMMANDS",
            ".SH FILES",
            ".SH \"EXIT STATUS\"",
        ] {
            assert!(
                page.contains(section),
                "vpnlbctl.8 has no {section}:\n{page}"
            );
        }
        for text in [
            "\\fBshow\\fR \\fBredirect\\fR",
            "\\fBgateway\\fR \\fINAME\\fR \\fBweight\\fR \\fIN\\fR",
            "/run/vpnlb/vpnlbd.sock",
            "\\-\\-socket",
            "the daemon could not be reached",
        ] {
            assert!(page.contains(text), "vpnlbctl.8 has no {text}:\n{page}");
        }
        // The test-only commands are in neither the page nor the completions.
        assert!(!page.contains("debug"), "{page}");

        let bash = read("vpnlbctl.bash");
        for word in [
            "show",
            "gateways",
            "redirect",
            "affinity",
            "drain",
            "weight",
            "prometheus",
            "reload",
            "--socket",
            "--output",
        ] {
            assert!(bash.contains(word), "vpnlbctl.bash has no {word}");
        }
        for (file, text) in [
            ("vpnlbctl.bash", bash.clone()),
            ("_vpnlbctl", read("_vpnlbctl")),
            ("vpnlbctl.fish", read("vpnlbctl.fish")),
        ] {
            assert!(text.contains("redirect"), "{file}");
            assert!(!text.contains("debug"), "{file}");
        }
        assert!(read("vpnlbd.bash").contains("replay"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn arguments_are_italic_words_bold() {
        assert_eq!(
            usage_inlines("gateway NAME weight [N]"),
            vec![
                bold("gateway"),
                roman(" "),
                italic("NAME"),
                roman(" "),
                bold("weight"),
                roman(" "),
                italic("[N]"),
            ]
        );
    }
}
