//! Relinks the program when the C shim changes. bpf-linker links the shim's bitcode (built
//! from kfuncs.c by synguard/build.rs, and passed as a link argument at a fixed path),
//! which cargo does not see as an input of this crate: without this, an edit to the shim
//! alone would leave the old object in place.

fn main() {
    println!("cargo:rerun-if-changed=kfuncs.c");
}
