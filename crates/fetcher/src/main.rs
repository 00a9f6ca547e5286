//! `oprelay-fetcher --config PATH`
fn main() -> std::process::ExitCode {
    oprelay_service::main(oprelay_fetcher::SERVICE, oprelay_fetcher::run)
}
