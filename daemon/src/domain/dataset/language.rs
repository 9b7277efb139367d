//! Programming languages of dataset records, and the names sources use for them.
//!
//! JavaScript and TypeScript stay separate languages (the seed's "javascript/typescript" groups
//! them in prose only): their ast-grep parsers differ, and a rewrite valid in one can fail in the
//! other. `tsx` counts as TypeScript and `jsx` as JavaScript, since the dialects share a language
//! for splits and stats. A consumer that wants them together can sum the two counts.

/// A language the processed splits keep. Records in any other language are counted as
/// `unknown_language` and excluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Language {
    Python,
    JavaScript,
    TypeScript,
    Java,
    Go,
    Rust,
    C,
    Cpp,
    CSharp,
    Ruby,
    Php,
    Kotlin,
    Swift,
    Scala,
    Shell,
    Sql,
    Lua,
    Dart,
    Haskell,
    Elixir,
    Html,
    Css,
    Json,
    Yaml,
}

// `ALL` holds as many languages as there are variants (the last variant's discriminant plus one);
// with the uniqueness test, that proves it lists each exactly once.
const _: () = assert!(Language::ALL.len() == Language::Yaml as usize + 1);

/// Every alias [`normalize_language`] accepts, lower case, with its language. The canonical name
/// ([`Language::as_str`]) is always one of them.
const ALIASES: &[(&str, Language)] = &[
    ("python", Language::Python),
    ("py", Language::Python),
    ("python3", Language::Python),
    ("python2", Language::Python),
    ("py3", Language::Python),
    ("javascript", Language::JavaScript),
    ("js", Language::JavaScript),
    ("node", Language::JavaScript),
    ("nodejs", Language::JavaScript),
    ("jsx", Language::JavaScript),
    ("mjs", Language::JavaScript),
    ("cjs", Language::JavaScript),
    ("ecmascript", Language::JavaScript),
    ("typescript", Language::TypeScript),
    ("ts", Language::TypeScript),
    ("tsx", Language::TypeScript),
    ("mts", Language::TypeScript),
    ("cts", Language::TypeScript),
    ("java", Language::Java),
    ("go", Language::Go),
    ("golang", Language::Go),
    ("rust", Language::Rust),
    ("rs", Language::Rust),
    ("c", Language::C),
    ("cpp", Language::Cpp),
    ("c++", Language::Cpp),
    ("cxx", Language::Cpp),
    ("cc", Language::Cpp),
    ("hpp", Language::Cpp),
    ("csharp", Language::CSharp),
    ("c#", Language::CSharp),
    ("cs", Language::CSharp),
    ("ruby", Language::Ruby),
    ("rb", Language::Ruby),
    ("php", Language::Php),
    ("kotlin", Language::Kotlin),
    ("kt", Language::Kotlin),
    ("kts", Language::Kotlin),
    ("swift", Language::Swift),
    ("scala", Language::Scala),
    ("shell", Language::Shell),
    ("sh", Language::Shell),
    ("bash", Language::Shell),
    ("zsh", Language::Shell),
    ("shellscript", Language::Shell),
    ("sql", Language::Sql),
    ("lua", Language::Lua),
    ("dart", Language::Dart),
    ("haskell", Language::Haskell),
    ("hs", Language::Haskell),
    ("elixir", Language::Elixir),
    ("ex", Language::Elixir),
    ("exs", Language::Elixir),
    ("html", Language::Html),
    ("htm", Language::Html),
    ("css", Language::Css),
    ("json", Language::Json),
    ("yaml", Language::Yaml),
    ("yml", Language::Yaml),
];

/// The language a source calls `raw`, ignoring surrounding whitespace and ASCII case; `None` for
/// a name not in the alias table (such records are counted, not guessed at). `h` is not an alias:
/// a header could be C or C++.
pub fn normalize_language(raw: &str) -> Option<Language> {
    let name = raw.trim();
    ALIASES
        .iter()
        .find(|(alias, _)| alias.eq_ignore_ascii_case(name))
        .map(|(_, language)| *language)
}

impl Language {
    /// Every language, in declaration order.
    pub const ALL: [Language; 24] = [
        Language::Python,
        Language::JavaScript,
        Language::TypeScript,
        Language::Java,
        Language::Go,
        Language::Rust,
        Language::C,
        Language::Cpp,
        Language::CSharp,
        Language::Ruby,
        Language::Php,
        Language::Kotlin,
        Language::Swift,
        Language::Scala,
        Language::Shell,
        Language::Sql,
        Language::Lua,
        Language::Dart,
        Language::Haskell,
        Language::Elixir,
        Language::Html,
        Language::Css,
        Language::Json,
        Language::Yaml,
    ];

    /// The canonical lower-case name used in stats, exports and file names.
    pub fn as_str(self) -> &'static str {
        match self {
            Language::Python => "python",
            Language::JavaScript => "javascript",
            Language::TypeScript => "typescript",
            Language::Java => "java",
            Language::Go => "go",
            Language::Rust => "rust",
            Language::C => "c",
            Language::Cpp => "cpp",
            Language::CSharp => "csharp",
            Language::Ruby => "ruby",
            Language::Php => "php",
            Language::Kotlin => "kotlin",
            Language::Swift => "swift",
            Language::Scala => "scala",
            Language::Shell => "shell",
            Language::Sql => "sql",
            Language::Lua => "lua",
            Language::Dart => "dart",
            Language::Haskell => "haskell",
            Language::Elixir => "elixir",
            Language::Html => "html",
            Language::Css => "css",
            Language::Json => "json",
            Language::Yaml => "yaml",
        }
    }
}

impl std::fmt::Display for Language {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `testdata/languages.txt`: `raw name => canonical name`, or `=> -` for no language.
    #[test]
    fn aliases_from_the_table() {
        let mut failures = Vec::new();
        for line in include_str!("../testdata/languages.txt").lines() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let (raw, expected) = line.split_once(" => ").unwrap();
            let raw = raw
                .strip_prefix('"')
                .and_then(|r| r.strip_suffix('"'))
                .unwrap_or(raw);
            let actual = normalize_language(raw).map_or("-", Language::as_str);
            if actual != expected {
                failures.push(format!("{raw:?} => {actual} (expected {expected})"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn canonical_names_round_trip_and_are_unique() {
        for language in Language::ALL {
            assert_eq!(normalize_language(language.as_str()), Some(language));
            assert_eq!(
                normalize_language(&language.as_str().to_uppercase()),
                Some(language)
            );
        }
        let mut names: Vec<&str> = Language::ALL.iter().map(|l| l.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Language::ALL.len());
    }

    #[test]
    fn every_alias_is_lower_case_and_listed_once() {
        let mut aliases: Vec<&str> = ALIASES.iter().map(|(alias, _)| *alias).collect();
        assert!(aliases
            .iter()
            .all(|a| *a == a.to_lowercase() && a.trim() == *a));
        aliases.sort_unstable();
        aliases.dedup();
        assert_eq!(aliases.len(), ALIASES.len());
    }
}
