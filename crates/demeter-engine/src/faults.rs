//! The test double around inference (`[runtime.faults]`): latency, errors, panics, process
//! aborts and hangs on demand, chosen by the photo's file name. It wraps the real model rather
//! than replacing it, so everything else about a photo's run stays real. Never on by default.

use std::time::Duration;

use demeter_domain::{config::Faults, JobError};

use crate::pipeline::Interrupt;

/// Applies the configured faults for the photo at `rel_path`, just before segmentation.
pub(crate) fn before_segment(faults: Option<&Faults>, rel_path: &str) -> Result<(), Interrupt> {
    let Some(f) = faults else { return Ok(()) };
    let name = rel_path.rsplit('/').next().unwrap_or(rel_path);
    let hit = |pattern: &Option<String>| pattern.as_deref().is_some_and(|p| !p.is_empty() && name.contains(p));
    if f.latency_ms > 0 {
        std::thread::sleep(Duration::from_millis(f.latency_ms));
    }
    if hit(&f.abort_on) {
        tracing::error!(photo = %rel_path, "injected fault: aborting the process");
        std::process::abort();
    }
    if hit(&f.panic_on) {
        panic!("injected panic while segmenting {name}");
    }
    if hit(&f.hang_on) {
        tracing::warn!(photo = %rel_path, "injected fault: segmentation hangs");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    if hit(&f.fail_on) {
        return Err(Interrupt::Failed(JobError::transient(format!("inference failed on {name} (injected fault)"))));
    }
    if f.device_broken_while.as_deref().is_some_and(std::path::Path::exists) {
        return Err(Interrupt::Device(
            JobError::transient("inference failed: the inference device is not responding (injected fault)"),
            None,
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_follow_the_file_name() {
        let f = Faults { fail_on: Some("bad-".into()), panic_on: Some("boom".into()), ..Default::default() };
        assert!(before_segment(Some(&f), "bench/ok.jpg").is_ok());
        assert!(before_segment(None, "bench/bad-1.jpg").is_ok(), "off unless configured");
        let Err(Interrupt::Failed(e)) = before_segment(Some(&f), "bench/bad-1.jpg") else { panic!("a photo failure") };
        assert!(e.message.contains("injected fault"), "{e}");
        assert!(std::panic::catch_unwind(|| before_segment(Some(&f), "boom.jpg")).is_err());
    }

    #[test]
    fn the_device_is_broken_while_the_flag_file_exists() {
        let dir = tempfile::tempdir().unwrap();
        let flag = dir.path().join("broken");
        let f = Faults { device_broken_while: Some(flag.clone()), ..Default::default() };
        assert!(before_segment(Some(&f), "a.jpg").is_ok());
        std::fs::write(&flag, "").unwrap();
        assert!(matches!(before_segment(Some(&f), "a.jpg"), Err(Interrupt::Device(..))));
        std::fs::remove_file(&flag).unwrap();
        assert!(before_segment(Some(&f), "a.jpg").is_ok());
    }
}
