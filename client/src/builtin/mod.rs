//! Built-in job kinds a worker runs without an external command (`agentctl worker --builtin
//! NAME`). Today there is one, `astgrep.verify`: verify a proposed ast-grep action in the
//! sandbox and record the sandbox result and a rule-based reward on the task's trajectory.
//!
//! Modules: [`verify_payload`] (what a job carries and its validation), [`test_files`] (which
//! files are the task's tests), [`verdict`] (the reward rules, pure), [`post_match`] (the
//! comparison with the expected result), [`python_runner`] (the trusted test runner whose
//! report the code under test cannot forge), [`sandbox_child`] (the sandbox run in a killable
//! child process), [`astgrep_verify`] (the handler that ties them to the daemon).

pub mod astgrep_verify;
pub mod post_match;
pub mod python_runner;
pub mod sandbox_child;
pub mod test_files;
pub mod verdict;
pub mod verify_payload;

/// A built-in job kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    /// `astgrep.verify`
    AstgrepVerify,
}

impl Builtin {
    /// Every built-in, for `--help` and error messages.
    pub const ALL: [Builtin; 1] = [Builtin::AstgrepVerify];

    /// The name used on the command line (and as the conventional job `kind`).
    pub fn name(self) -> &'static str {
        match self {
            Builtin::AstgrepVerify => "astgrep.verify",
        }
    }
}

impl std::str::FromStr for Builtin {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Builtin::ALL
            .into_iter()
            .find(|builtin| builtin.name() == text)
            .ok_or_else(|| {
                let names: Vec<&str> = Builtin::ALL.iter().map(|b| b.name()).collect();
                format!("unknown built-in {text:?} (known: {})", names.join(", "))
            })
    }
}
