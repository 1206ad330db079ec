//! synguard's kernel side: thin glue between the XDP/TC hooks and the pure logic in
//! `synguard-common`. All decisions live there; these modules own maps, helpers and `unsafe`.
#![no_std]
#![no_main]

mod maps;
mod sock;
mod tc;
mod xdp;

/// The program entry points. aya's macros wrap each in a safe `pub extern "C" fn` taking
/// the raw context pointer, which clippy flags; the kernel is the only caller.
#[allow(clippy::not_unsafe_ptr_arg_deref)]
mod entry {
    use aya_ebpf::{
        macros::{classifier, xdp},
        programs::{TcContext, XdpContext},
    };

    #[xdp]
    pub fn synguard_xdp(ctx: XdpContext) -> u32 {
        crate::xdp::run(ctx.ctx)
    }

    #[classifier]
    pub fn synguard_tc(ctx: TcContext) -> i32 {
        crate::tc::run(&ctx)
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// The kernel only lets GPL-compatible programs call kfuncs; "Dual MIT/GPL" is one.
// SAFETY: `license` is the section the loader reads the licence from, and nothing else in
// the object defines a `LICENSE` symbol or puts code or data in that section.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
