//! `recur host --config FILE` and `--print-config`: a host's settings from a TOML file,
//! under the flags and their RECUR_ variables, and the settings in effect printed back as
//! such a file.
//!
//! The file is merged before the arguments are parsed for good: each of its keys that
//! no flag or variable gave becomes that flag, appended to the command line, so that the
//! file's values pass the same parsers and checks as a flag's, and a bad one is refused
//! the same way.

use std::ffi::OsString;
use std::path::Path;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory};

use super::Cli;

/// `args` with the settings of the host's `--config` file appended as flags, where it
/// has one; an error says what in the file is wrong. Arguments that do not parse are
/// returned as they are, for the real parse to report.
pub fn with_config_file(args: Vec<OsString>) -> Result<Vec<OsString>, String> {
    let Ok(matches) = Cli::command().try_get_matches_from(&args) else {
        return Ok(args);
    };
    let Some(("host", host)) = matches.subcommand() else {
        return Ok(args);
    };
    let Some(path) = host.get_one::<std::path::PathBuf>("config") else {
        return Ok(args);
    };
    let mut args = args;
    args.extend(file_flags(path, host)?);
    Ok(args)
}

/// The flags the file at `path` gives that `host` (the arguments parsed so far) does
/// not have from a flag or a variable.
fn file_flags(path: &Path, host: &ArgMatches) -> Result<Vec<OsString>, String> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the config file {shown}: {e}"))?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        format!(
            "the config file {shown} is not TOML: {}",
            e.message().replace('\n', " ")
        )
    })?;
    let command = Cli::command();
    let host_command = command
        .find_subcommand("host")
        .expect("recur has a host command");
    let mut flags = Vec::new();
    for (key, value) in table {
        let id = key.replace('-', "_");
        let known = host_command
            .get_arguments()
            .any(|arg| arg.get_id() == id.as_str() && arg.get_long().is_some());
        if !known || id == "config" || id == "print_config" {
            return Err(format!(
                "the config file {shown} has no setting {key:?}; `recur host --help` lists them"
            ));
        }
        if matches!(
            host.value_source(&id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        let flag = format!("--{}", id.replace('_', "-"));
        match value {
            toml::Value::Boolean(true) => flags.push(flag.into()),
            toml::Value::Boolean(false) => {}
            toml::Value::Array(items) => {
                let items: Result<Vec<String>, String> = items
                    .iter()
                    .map(|item| scalar(&key, item, &shown))
                    .collect();
                flags.push(format!("{flag}={}", items?.join(",")).into());
            }
            other => flags.push(format!("{flag}={}", scalar(&key, &other, &shown)?).into()),
        }
    }
    Ok(flags)
}

/// A single value as a flag takes it.
fn scalar(key: &str, value: &toml::Value, shown: &std::path::Display) -> Result<String, String> {
    match value {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(n) => Ok(n.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        _ => Err(format!(
            "the config file {shown} gives {key:?} a value of a kind no flag takes; give a string, a number, true or false, or a list of them"
        )),
    }
}

/// The host's settings in effect, as a config file: each setting with its value (a
/// flag's, a variable's, the file's or the default), and the database URL with its
/// password masked. Settings without a value are left out.
pub fn print_config(matches: &ArgMatches) -> String {
    let mut out = String::new();
    if let Some(url) = matches.get_one::<String>("database_url") {
        out.push_str(&format!("# database_url = {:?}\n", masked(url)));
    }
    let Some(("host", host)) = matches.subcommand() else {
        return out;
    };
    let command = Cli::command();
    let host_command = command
        .find_subcommand("host")
        .expect("recur has a host command");
    for arg in host_command.get_arguments() {
        let id = arg.get_id().as_str();
        if arg.get_long().is_none() || matches!(id, "config" | "print_config" | "help") {
            continue;
        }
        let Ok(Some(values)) = host.try_get_raw(id) else {
            continue;
        };
        let values: Vec<String> = values.map(|v| v.to_string_lossy().into_owned()).collect();
        let value = if arg.get_num_args().is_some_and(|n| n.max_values() > 1)
            || arg.get_value_delimiter().is_some()
        {
            let items: Vec<String> = values.iter().map(|v| toml_value(v)).collect();
            format!("[{}]", items.join(", "))
        } else {
            values.first().map(|v| toml_value(v)).unwrap_or_default()
        };
        out.push_str(&format!("{id} = {value}\n"));
    }
    out
}

/// `text` as a TOML value: a number or a boolean as it is, anything else quoted.
fn toml_value(text: &str) -> String {
    if text.parse::<i64>().is_ok() || text == "true" || text == "false" {
        text.to_owned()
    } else {
        format!("{text:?}")
    }
}

/// `url` with any password replaced by `***`.
fn masked(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_urls_password_is_masked_and_nothing_else_is() {
        assert_eq!(
            masked("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(masked("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            masked("postgres:///db?host=/run"),
            "postgres:///db?host=/run"
        );
    }
}
