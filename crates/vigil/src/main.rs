use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    vigil::init_tracing();
    let cli = vigil::Cli::parse();
    match vigil::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vigil: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
