//! Where the upstream CRDs are: `shared/crds` beside the checkout (or
//! above it). CI always has them; a clone on its own does not.

use std::path::{Path, PathBuf};

/// The CRD directory, if present; one line on stderr when it is not (the
/// API server then runs without schema checks).
pub fn crd_dir() -> Option<PathBuf> {
    let found = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|p| p.join("shared/crds"))
        .find(|p| p.is_dir());
    if found.is_none() {
        eprintln!("shared/crds not found next to the checkout: running without CRD schemas");
    }
    found
}
