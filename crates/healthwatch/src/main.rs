//! `oprelay-healthwatch --config PATH`
fn main() -> std::process::ExitCode {
    oprelay_service::main(oprelay_healthwatch::SERVICE, oprelay_healthwatch::run)
}
