//! `oprelay-normalizer --config PATH`
fn main() -> std::process::ExitCode {
    oprelay_service::main(oprelay_normalizer::SERVICE, oprelay_normalizer::run)
}
