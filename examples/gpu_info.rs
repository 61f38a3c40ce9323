//! Prints the adapter kiln would run on, its backend, driver and limits.
//! `KILN_BACKEND=vulkan|metal|dx12|gl` and `KILN_ADAPTER=<name substring>` choose; a
//! `KILN_DIRECT_CONV` that kiln's kernel choice would refuse is refused here too.

fn main() {
    match kiln::Gpu::new().and_then(|gpu| kiln::kernels::conv::ConvSwitches::from_env().map(|_| gpu)) {
        Ok(gpu) => println!("{}", gpu.info()),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    }
}
