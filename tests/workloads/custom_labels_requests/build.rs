// Exports custom_labels_current_set and custom_labels_abi_version from the executable (the
// crate's own instructions), as the ABI requires.
fn main() {
    custom_labels::build::emit_build_instructions();
}
