//! Replays the saved inputs of a fuzz target (`fuzz/corpus/T`,
//! `fuzz/regressions/T`) through the entry point the target calls; shared by
//! the fuzz regression tests of the library and of the CLI crate.

use std::path::Path;

/// Run every saved input of `target` through `run`; the file is named first,
/// so a failure says which input it was.
pub fn replay(target: &str, run: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut n = 0;
    for kind in ["corpus", "regressions"] {
        let Ok(dir) = std::fs::read_dir(root.join(kind).join(target)) else {
            continue;
        };
        let mut files: Vec<_> = dir.map(|e| e.unwrap().path()).collect();
        files.sort();
        for f in files {
            eprintln!("replaying {}", f.display());
            run(&std::fs::read(&f).unwrap());
            n += 1;
        }
    }
    assert!(n > 0, "no saved inputs for fuzz target {target}");
}
