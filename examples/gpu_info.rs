//! Prints the adapter kiln would run on, its backend, driver and limits.
//! `KILN_BACKEND=vulkan|metal|dx12|gl` and `KILN_ADAPTER=<name substring>` choose.

fn main() {
    match kiln::Gpu::new() {
        Ok(gpu) => println!("{}", gpu.info()),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    }
}
