//! The crate's errors: [`ConfigError`] for a configuration that is refused, [`Error`]
//! for everything that stops the control layer from starting or reloading. Errors
//! answered to HTTP clients are `api::ApiError` (a status, a documented code, a message).

/// A configuration that is refused, with the line and the field when known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}field `{field}`: {message}", line.map(|l| format!("line {l}, ")).unwrap_or_default())]
pub struct ConfigError {
    line: Option<usize>,
    field: String,
    message: String,
}

impl ConfigError {
    pub(crate) fn invalid(line: Option<usize>, field: &str, message: String) -> ConfigError {
        ConfigError {
            line,
            field: field.to_owned(),
            message,
        }
    }

    /// A TOML syntax or type error: toml's message says what is wrong; the line comes
    /// from its span, and the field is the dotted key written on that line, under the
    /// table header above it (`rules.percent`).
    pub(crate) fn from_toml(text: &str, err: &toml::de::Error) -> ConfigError {
        let line = err.span().map(|s| crate::config::line_of(text, s.start));
        let field = line
            .and_then(|l| field_at(text, l))
            .unwrap_or_else(|| "(document)".to_owned());
        ConfigError {
            line,
            field,
            message: err.message().trim().to_owned(),
        }
    }

    /// 1-based line of the offending entry, when known.
    pub fn line(&self) -> Option<usize> {
        self.line
    }

    /// The field (a dotted path like `rules.percent`, or the text at a syntax error).
    pub fn field(&self) -> &str {
        &self.field
    }

    /// What is wrong.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// What stops the control layer from starting or reloading.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration was refused.
    #[error("config {path}: {source}")]
    Config {
        /// Where it came from.
        path: String,
        /// Why.
        source: ConfigError,
    },
    /// The configuration file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The HTTP listener could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The node registry could not be reached at start.
    #[error("node registry: {0}")]
    Registry(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The dotted key set on 1-based `line` of `text`, prefixed by the table header above
/// it; `None` if the line sets no key.
fn field_at(text: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let here = lines.get(line.checked_sub(1)?)?.trim();
    let key = match here.split_once('=') {
        Some((key, _)) if !here.starts_with('[') => key.trim(),
        _ => {
            return here
                .starts_with('[')
                .then(|| here.trim_matches(['[', ']']).to_owned());
        }
    };
    let header = lines[..line - 1]
        .iter()
        .rev()
        .map(|l| l.trim())
        .find(|l| l.starts_with('['))
        .map(|h| h.trim_matches(['[', ']']).trim());
    Some(match header {
        Some(h) => format!("{h}.{key}"),
        None => key.to_owned(),
    })
}
