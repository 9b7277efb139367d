use super::*;

#[test]
fn plain_relative_paths_are_accepted() {
    for path in ["a.py", "src/pkg/mod.py", ".github/x.yml", "a b/c-d_e.ts"] {
        validate_relative_path(path).unwrap();
    }
}

#[test]
fn escaping_and_unportable_paths_are_refused() {
    for path in [
        "",
        "/etc/passwd",
        "../x",
        "a/../../x",
        "a//b",
        "a/./b",
        "a/",
        "a\0b",
        "a\\b",
        "C:x",
        "con",
        "src/aux.py",
        "trailing.",
        "trailing ",
        "what?",
    ] {
        assert!(validate_relative_path(path).is_err(), "{path:?} accepted");
    }
}

#[test]
fn writes_nested_files_and_refuses_symlinked_parents() {
    let workspace = Workspace::create(None, "agentd-ws-test-").unwrap();
    workspace.write_file("a/b/c.py", "x = 1\n").unwrap();
    let written = fs::read_to_string(workspace.path().join("a/b/c.py")).unwrap();
    assert_eq!(written, "x = 1\n");

    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), workspace.path().join("link")).unwrap();
    assert!(workspace.write_file("link/evil.py", "x").is_err());
    std::os::unix::fs::symlink(
        outside.path().join("target"),
        workspace.path().join("file-link"),
    )
    .unwrap();
    assert!(workspace.write_file("file-link", "x").is_err());
    assert!(!outside.path().join("evil.py").exists());
    assert!(!outside.path().join("target").exists());
}

#[test]
fn directories_above_protected_files_include_the_workspace() {
    let protected: BTreeSet<String> = ["a/b/c.py", "t.py"].map(String::from).into();
    let directories: Vec<String> = directories_above(&protected).into_iter().collect();
    assert_eq!(directories, ["", "a", "a/b"]);
    assert!(directories_above(&BTreeSet::new()).is_empty());
}

#[test]
fn loads_a_directory_skipping_symlinks_and_git() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("pkg")).unwrap();
    fs::create_dir_all(dir.path().join(".git")).unwrap();
    fs::write(dir.path().join("pkg/a.py"), "a\n").unwrap();
    fs::write(dir.path().join("b.py"), "b\n").unwrap();
    fs::write(dir.path().join(".git/config"), "x").unwrap();
    std::os::unix::fs::symlink("/etc/hostname", dir.path().join("host")).unwrap();
    let files = load_files_from_dir(dir.path()).unwrap();
    let paths: Vec<&str> = files.keys().map(String::as_str).collect();
    assert_eq!(paths, ["b.py", "pkg/a.py"]);
}

#[test]
fn non_utf8_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("blob.bin"), [0xff, 0xfe]).unwrap();
    let error = load_files_from_dir(dir.path()).unwrap_err();
    assert!(matches!(error, SandboxError::NotUtf8 { .. }), "{error}");
}
