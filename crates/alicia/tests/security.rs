//! `alicia broker -c mosquitto.conf` with a password file and an ACL file, driven by the real
//! `mosquitto_pub`/`mosquitto_sub`; reload on SIGHUP keeps the old rules when the new ACL file
//! is broken.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

struct Alicia(Child);

impl Drop for Alicia {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn have(cmd: &str) -> bool {
    Command::new("sh").arg("-c").arg(format!("command -v {cmd}")).output().is_ok_and(|o| o.status.success())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn start(conf: &Path) -> Alicia {
    let mut child = Command::new(env!("CARGO_BIN_EXE_alicia"))
        .args(["broker", "-c"])
        .arg(conf)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert!(line.contains("listening on"), "broker did not start: {line:?}");
    Alicia(child)
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap()
}

fn pub_(port: u16, user: Option<(&str, &str)>, topic: &str) -> Output {
    let mut c = Command::new("mosquitto_pub");
    c.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", topic, "-m", "x", "-q", "1", "-V", "mqttv5"]);
    if let Some((u, p)) = user {
        c.args(["-u", u, "-P", p]);
    }
    run(&mut c)
}

/// Subscribes as `user` and returns what arrived on `topic` after `publish` ran.
fn delivered(port: u16, user: (&str, &str), topic: &str, publish: impl FnOnce()) -> String {
    let child = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", topic, "-u", user.0, "-P", user.1])
        .args(["-C", "1", "-W", "2", "-v"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(400));
    publish();
    String::from_utf8_lossy(&child.wait_with_output().unwrap().stdout).to_string()
}

#[test]
fn passwords_acl_and_reload() {
    if !have("mosquitto_passwd") || !have("mosquitto_pub") {
        eprintln!("SKIP: mosquitto and mosquitto-clients not installed (scripts/test.sh installs them)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // alice's entry is written by the real mosquitto_passwd, bob's by `alicia passwd`.
    assert!(run(Command::new("mosquitto_passwd").args(["-c", "-b"]).arg(d.join("passwd")).args(["alice", "wonder"]))
        .status
        .success());
    let mut p = Command::new(env!("CARGO_BIN_EXE_alicia"))
        .arg("passwd")
        .arg(d.join("passwd"))
        .arg("bob")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    p.stdin.take().unwrap().write_all(b"builder\n").unwrap();
    assert!(p.wait().unwrap().success());

    std::fs::write(
        d.join("acl"),
        "user alice\ntopic readwrite home/#\ntopic read $SYS/broker/reload\n\nuser bob\ntopic read home/#\ntopic write devices/bob/#\n",
    )
    .unwrap();
    let port = free_port();
    let conf = d.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file passwd\nacl_file acl\nsys_interval 0\n"
        ),
    )
    .unwrap();
    let mut broker = start(&conf);

    assert!(!pub_(port, None, "home/x").status.success(), "anonymous must be refused");
    assert!(!pub_(port, Some(("alice", "wrong")), "home/x").status.success(), "a wrong password must be refused");
    let got = delivered(port, ("bob", "builder"), "home/#", || {
        assert!(pub_(port, Some(("alice", "wonder")), "home/lamp").status.success());
    });
    assert_eq!(got.trim(), "home/lamp x", "alice may write home/#, bob may read it");
    let got = delivered(port, ("alice", "wonder"), "home/#", || {
        pub_(port, Some(("bob", "builder")), "home/lamp");
    });
    assert_eq!(got.trim(), "", "bob may not write home/#");

    // A broken ACL file: the reload fails and the old rules stay.
    std::fs::write(d.join("acl"), "user bob\ntopic sideways home/#\n").unwrap();
    let watch = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-u", "alice", "-P", "wonder"])
        .args(["-t", "$SYS/broker/reload", "-C", "1", "-W", "5"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(400));
    assert!(Command::new("kill").arg("-HUP").arg(broker.0.id().to_string()).status().unwrap().success());
    let notice = String::from_utf8_lossy(&watch.wait_with_output().unwrap().stdout).to_string();
    assert!(notice.contains("\"ok\":false") && notice.contains("acl:2"), "reload error published: {notice}");
    let got = delivered(port, ("bob", "builder"), "home/#", || {
        assert!(pub_(port, Some(("alice", "wonder")), "home/door").status.success());
    });
    assert_eq!(got.trim(), "home/door x", "old rules still in force");

    // A good ACL file giving bob write access: the reload takes effect.
    std::fs::write(
        d.join("acl"),
        "user alice\ntopic readwrite home/#\ntopic read $SYS/broker/reload\n\nuser bob\ntopic readwrite home/#\n",
    )
    .unwrap();
    assert!(Command::new("kill").arg("-HUP").arg(broker.0.id().to_string()).status().unwrap().success());
    std::thread::sleep(Duration::from_millis(300));
    let got = delivered(port, ("alice", "wonder"), "home/#", || {
        assert!(pub_(port, Some(("bob", "builder")), "home/window").status.success());
    });
    assert_eq!(got.trim(), "home/window x", "new rules in force");
    let _ = broker.0.kill();
    let _ = broker.0.wait();
}
