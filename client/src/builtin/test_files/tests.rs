use super::*;

fn files(paths: &[&str]) -> BTreeMap<String, String> {
    paths
        .iter()
        .map(|path| (path.to_string(), String::new()))
        .collect()
}

fn sorted(set: BTreeSet<String>) -> Vec<String> {
    set.into_iter().collect()
}

#[test]
fn defaults_find_the_usual_test_files_of_each_language() {
    let task = files(&[
        "app.py",
        "test_app.py",
        "pkg/util_test.py",
        "pkg/testing.py",
        "conftest.py",
        "tests/helpers.py",
        "web/app.js",
        "web/app.test.js",
        "web/app.spec.ts",
        "web/__tests__/x.js",
        "src/main/java/App.java",
        "src/test/java/AppTest.java",
        "src/main/java/AppTest.java",
        "contest.py",
    ]);
    assert_eq!(
        sorted(default_test_files(&task)),
        [
            "conftest.py",
            "pkg/util_test.py",
            "src/main/java/AppTest.java",
            "src/test/java/AppTest.java",
            "test_app.py",
            "tests/helpers.py",
            "web/__tests__/x.js",
            "web/app.spec.ts",
            "web/app.test.js",
        ]
    );
}

#[test]
fn named_tests_take_paths_globs_and_directories() {
    let task = files(&[
        "app.py",
        "check.py",
        "spec/a.py",
        "spec/deep/b.py",
        "x/spec.py",
    ]);
    let named = |patterns: &[&str]| {
        named_test_files(
            &task,
            &patterns.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        )
    };
    assert_eq!(sorted(named(&["check.py"]).unwrap()), ["check.py"]);
    assert_eq!(sorted(named(&["spec/*.py"]).unwrap()), ["spec/a.py"]);
    assert_eq!(
        sorted(named(&["spec/"]).unwrap()),
        ["spec/a.py", "spec/deep/b.py"]
    );
    assert_eq!(
        sorted(named(&["**/spec*"]).unwrap()),
        ["x/spec.py"],
        "`*` does not cross `/`"
    );
    assert!(named(&["chek.py"]).unwrap_err().contains("matches none"));
    assert!(named(&["a[.py"]).unwrap_err().contains("not a valid glob"));
    assert!(named(&[]).unwrap().is_empty());
}
