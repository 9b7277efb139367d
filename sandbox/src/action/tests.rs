use super::*;

fn files(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
    entries
        .iter()
        .map(|(path, content)| (path.to_string(), content.to_string()))
        .collect()
}

fn pattern(language: &str, pattern: &str, rewrite: &str) -> Action {
    Action::Pattern {
        language: language.to_string(),
        pattern: pattern.to_string(),
        rewrite: rewrite.to_string(),
    }
}

#[test]
fn pattern_rewrites_only_files_of_its_language() {
    let before = files(&[
        ("app.py", "print(x)\nprint('a', b)\n"),
        ("app.js", "print(x)\n"),
    ]);
    let after = apply_action_in_memory(
        &before,
        &pattern("python", "print($$$A)", "logger.info($$$A)"),
    )
    .unwrap();
    assert_eq!(after["app.py"], "logger.info(x)\nlogger.info('a', b)\n");
    assert_eq!(after["app.js"], "print(x)\n");
}

#[test]
fn yaml_rule_with_fix_rewrites() {
    let before = files(&[("src/a.ts", "var x = 1;\nlet y = 2;\n")]);
    let yaml =
        "id: no-var\nlanguage: typescript\nrule:\n  pattern: var $A = $B\nfix: let $A = $B;\n";
    let after = apply_action_in_memory(&before, &Action::Rule { yaml: yaml.into() }).unwrap();
    assert_eq!(after["src/a.ts"], "let x = 1;\nlet y = 2;\n");
}

#[test]
fn yaml_rule_respects_file_globs() {
    let before = files(&[
        ("a/A.java", "class A { void f() { g(); } }\n"),
        ("b/B.java", "class B { void f() { g(); } }\n"),
    ]);
    let yaml = "id: g-to-h\nlanguage: java\nfiles: ['a/**']\nrule:\n  pattern: g()\nfix: h()\n";
    let after = apply_action_in_memory(&before, &Action::Rule { yaml: yaml.into() }).unwrap();
    assert!(after["a/A.java"].contains("h()"));
    assert!(after["b/B.java"].contains("g()"));
}

#[test]
fn rule_matching_nothing_changes_nothing() {
    let before = files(&[("a.py", "x = 1\n")]);
    let after = apply_action_in_memory(&before, &pattern("py", "print($A)", "log($A)")).unwrap();
    assert_eq!(after, before);
}

#[test]
fn invalid_actions_are_refused_with_a_reason() {
    let before = files(&[("a.py", "x = 1\n")]);
    let cases = [
        pattern("cobol", "x", "y"),
        pattern("rust", "x", "y"),
        pattern("python", "$$$A", "y"),
        Action::Rule {
            yaml: "id: x\nlanguage: python\nrule:\n  pattern: print($A)\n".into(),
        },
        Action::Rule {
            yaml: "id: x\nlanguage: rust\nrule:\n  pattern: f()\nfix: g()\n".into(),
        },
        Action::Rule {
            yaml: "id: [unclosed\n".into(),
        },
        Action::Rule {
            yaml: "id: x\nlanguage: python\nrule:\n  kind: no_such_kind\nfix: y\n".into(),
        },
        Action::Rule { yaml: "".into() },
    ];
    for action in cases {
        let error = apply_action_in_memory(&before, &action).unwrap_err();
        assert!(
            matches!(error, SandboxError::InvalidAction(_)),
            "{action:?}: {error}"
        );
    }
}

#[test]
fn application_is_deterministic() {
    let before = files(&[("b.py", "print(1)\n"), ("a.py", "print(2)\n")]);
    let action = pattern("python", "print($A)", "log($A)");
    let first = apply_action_in_memory(&before, &action).unwrap();
    let second = apply_action_in_memory(&before, &action).unwrap();
    assert_eq!(first, second);
}
