//! Where the upstream CRDs are: `shared/crds` beside the checkout (or
//! above it). CI has them; a clone on its own does not, and CI runs the
//! suite a second time as such a clone would by setting
//! [`IGNORE_SHARED_ENV`].

use std::path::{Path, PathBuf};

/// Set (to anything) to make the lookup find nothing, as on a clone with
/// nothing beside it.
pub const IGNORE_SHARED_ENV: &str = "SNAPSHOTTER_TESTS_IGNORE_SHARED";

/// The CRD directory, if present; one line on stderr when it is not (the
/// API server then checks against its built-in schemas).
pub fn crd_dir() -> Option<PathBuf> {
    let found = std::env::var_os(IGNORE_SHARED_ENV)
        .is_none()
        .then(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .ancestors()
                .map(|p| p.join("shared/crds"))
                .find(|p| p.is_dir())
        })
        .flatten();
    if found.is_none() {
        eprintln!("shared/crds not found next to the checkout: built-in schemas only");
    }
    found
}

/// The schemas objects are checked against: the upstream CRDs when they
/// are beside the checkout, the server's built-in ones otherwise.
#[cfg(feature = "testing")]
#[allow(dead_code)] // not every test crate that includes this file uses it
pub fn schemas() -> csi_snapshotter::testing::apiserver::schema::Schemas {
    use csi_snapshotter::testing::apiserver::schema::Schemas;
    match crd_dir() {
        Some(dir) => Schemas::load_dir(&dir).expect("the upstream CRDs load"),
        None => Schemas::builtin(),
    }
}
