//! `oprelay-forwarder --config PATH`
fn main() -> std::process::ExitCode {
    oprelay_service::main(oprelay_forwarder::SERVICE, oprelay_forwarder::run)
}
