fn main() {
    let code = task_agent::cli::main_with(std::env::args_os().collect());
    std::process::exit(code);
}
