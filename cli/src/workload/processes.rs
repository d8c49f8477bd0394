//! `strata load --processes N`: the load test as N processes on one database file, each a
//! `strata load --instances` of its own, to measure several instances sharing the file (their
//! caches kept exact by the change log, their writers taking turns at the write lock).

use std::ffi::OsString;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use strata::{Error, Result};

use super::commands::{prepare_with, Target};
use super::progress::Bar;
use super::Scale;

/// Seeds the database at `target` once (so the children start together on the same data),
/// then runs `processes` children of this executable with `args` (the parent's own arguments
/// without `--processes` and `--db`) plus `--db <file>`, `--instances` and `--quiet` (unless
/// given), and prints each one's report. True if every child succeeded.
pub fn run(
    processes: usize,
    target: &Target,
    scale: Scale,
    args: &[OsString],
    out: &mut dyn Write,
) -> Result<bool> {
    let bar = Bar::new(true);
    let prepared = prepare_with(target, scale, &bar, None, true)?;
    drop(prepared);
    let path = target.path();
    let exe = std::env::current_exe().map_err(|source| Error::Io {
        path: "strata".into(),
        source,
    })?;
    let children = (0..processes)
        .map(|_| {
            let mut command = Command::new(&exe);
            command.args(args).args(["--db".as_ref(), path.as_os_str()]);
            if !args.iter().any(|a| a == "--instances") {
                command.arg("--instances");
            }
            if !args.iter().any(|a| a == "--quiet" || a == "-q") {
                command.arg("--quiet");
            }
            command
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|source| Error::Io {
                    path: exe.clone(),
                    source,
                })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut ok = true;
    for (i, child) in children.into_iter().enumerate() {
        let output = child.wait_with_output().map_err(|source| Error::Io {
            path: exe.clone(),
            source,
        })?;
        ok &= output.status.success();
        let text = format!(
            "== process {} of {processes} on {} ({}) ==\n{}{}",
            i + 1,
            path.display(),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        out.write_all(text.as_bytes()).map_err(|source| Error::Io {
            path: Path::new("stdout").to_owned(),
            source,
        })?;
    }
    Ok(ok)
}

/// The parent's arguments after the subcommand, without `--processes N` and `--db FILE`
/// (either as two words or as `--flag=value`).
pub fn child_args(all: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut skip_next = false;
    for arg in all {
        if skip_next {
            skip_next = false;
            continue;
        }
        let text = arg.to_string_lossy();
        if text == "--processes" || text == "--db" {
            skip_next = true;
        } else if !(text.starts_with("--processes=") || text.starts_with("--db=")) {
            out.push(arg);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_children_get_the_parents_arguments_but_processes_and_db() -> Result<()> {
        let args = [
            "load",
            "--processes",
            "2",
            "--db=x.db",
            "--threads",
            "2",
            "--zipf",
            "1",
        ]
        .map(OsString::from);
        let kept: Vec<String> = child_args(args)
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(kept, ["load", "--threads", "2", "--zipf", "1"]);
        Ok(())
    }
}
