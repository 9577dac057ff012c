// private dev harness (not committed)
#[path = "../../tools/bench/loader.rs"]
mod loader;
fn main() {
    let quick = !std::env::args().any(|a| a == "--full");
    match loader::run_loader_bench(quick) {
        Ok(figs) => for f in figs { println!("{:<60} {:>10.1} {:<9} {:?} {}", f.name, f.value, f.unit, f.pass, f.note) },
        Err(e) => { eprintln!("error: {e}"); std::process::exit(2) }
    }
}
