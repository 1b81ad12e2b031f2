//! The web view in headless Chromium, driven over WebDriver
//! (chromedriver on a random port; a small client below, JSON over HTTP):
//! log in, watch a run's picture and a node's log change while it runs,
//! walk its history, pause, unpause, cancel, approve an input, edit a
//! workflow with an error and publish it fixed, see every outside string
//! escaped; a viewer sees no buttons and a forced post is refused; a post
//! without the form token is refused; log out.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/chromium`
//! installs them). `ORCH_WEB_SCREENSHOTS=DIR` saves pictures of pages.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use orch::client::Client;
use orch::Store;
use serde_json::{json, Value};

use crate::server::{serve, user_token, Served};
use crate::util::Space;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long any DOM condition may take to come true.
const DEADLINE: Duration = Duration::from_secs(60);

/// A chromedriver process (in a process group of its own, with the
/// browser it starts) and one browser session.
struct Browser {
    driver: Child,
    http: Client,
    session: String,
    /// The server the pages come from.
    base: String,
}

fn chromium_present() {
    for (path, what) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
        assert!(
            Path::new(path).exists(),
            "the web view's tests need headless Chromium: {path} is missing. \
             Install it with `apt-get install -y chromium chromium-driver` \
             (or run .ci/chromium); missing package: {what}"
        );
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Processes (alive, not zombies) in process group `pgid`.
fn group_members(pgid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // pid (comm) state ppid pgrp …; comm may hold spaces.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string() {
            out.push(pid);
        }
    }
    out
}

impl Browser {
    fn start(space: &Space, base: &str) -> Browser {
        chromium_present();
        use std::os::unix::process::CommandExt;
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("chromedriver starts");
        let http = Client::new(&format!("http://127.0.0.1:{port}"), None);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = http.call("GET", "/status", None) {
                if r.json()["value"]["ready"] == true {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver did not get ready");
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = space.path().join(format!("chromium-{port}"));
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,1000",
                         "--disable-crash-reporter", "--disable-breakpad",
                         format!("--user-data-dir={}", profile.display())]
            }
        }}});
        let mut browser = Browser {
            driver,
            http,
            session: String::new(),
            base: base.to_string(),
        };
        let r = browser.call("POST", "/session", Some(&caps));
        browser.session = r["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {r}"))
            .to_string();
        browser
    }

    /// A WebDriver call; its `value`.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let r = self
            .http
            .call(method, path, body)
            .expect("chromedriver answers");
        let v = r.json();
        assert!(
            (200..300).contains(&r.status),
            "{method} {path}: {} {}",
            r.status,
            r.body
        );
        v["value"].clone()
    }

    fn s(&self, path: &str) -> String {
        format!("/session/{}{path}", self.session)
    }

    fn go(&self, path: &str) {
        self.call(
            "POST",
            &self.s("/url"),
            Some(&json!({"url": format!("{}{path}", self.base)})),
        );
    }

    fn url(&self) -> String {
        self.call("GET", &self.s("/url"), None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Runs a script in the page; its return value.
    fn js(&self, script: &str, args: Value) -> Value {
        self.call(
            "POST",
            &self.s("/execute/sync"),
            Some(&json!({"script": script, "args": args})),
        )
    }

    /// Runs an async script (its last argument is the callback).
    fn js_async(&self, script: &str, args: Value) -> Value {
        self.call(
            "POST",
            &self.s("/execute/async"),
            Some(&json!({"script": script, "args": args})),
        )
    }

    fn find(&self, css: &str) -> String {
        let v = self.call(
            "POST",
            &self.s("/element"),
            Some(&json!({"using": "css selector", "value": css})),
        );
        v["element-6066-11e4-a52e-4f735466cecf"]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_string()
    }

    /// Clicks an element (found again when the page redrew it between
    /// finding and clicking: the live parts do).
    fn click(&self, css: &str) {
        for _ in 0..5 {
            let e = self.find(css);
            let r = self
                .http
                .call(
                    "POST",
                    &self.s(&format!("/element/{e}/click")),
                    Some(&json!({})),
                )
                .expect("chromedriver answers");
            if (200..300).contains(&r.status) {
                return;
            }
            assert!(
                r.body.contains("stale element"),
                "click {css}: {} {}",
                r.status,
                r.body
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{css} was redrawn under every click");
    }

    fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.call(
            "POST",
            &self.s(&format!("/element/{e}/clear")),
            Some(&json!({})),
        );
        self.call(
            "POST",
            &self.s(&format!("/element/{e}/value")),
            Some(&json!({"text": text})),
        );
    }

    /// Sets a text area or field's value directly (text with newlines).
    fn set_value(&self, css: &str, text: &str) {
        let ok = self.js(
            "const e = document.querySelector(arguments[0]); if (!e) return false; e.value = arguments[1]; return true;",
            json!([css, text]),
        );
        assert_eq!(ok, true, "no element {css}");
    }

    fn text(&self, css: &str) -> String {
        self.js(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
            json!([css]),
        )
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    /// Polls a script until it returns true (a bounded deadline).
    fn wait_until(&self, what: &str, script: &str, args: Value) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            // A page that is loading answers with an error: try again.
            let r = self.http.call(
                "POST",
                &self.s("/execute/sync"),
                Some(&json!({"script": script, "args": args})),
            );
            if let Ok(r) = r {
                if r.status == 200 && r.json()["value"] == true {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "waited {DEADLINE:?} for {what}; the page ({}) shows: {}",
                self.url(),
                self.text("main")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn login(&self, user: &str, password: &str) {
        self.go("/login");
        self.type_into("#user", user);
        self.type_into("#password", password);
        self.click("#signin");
        self.wait_until(
            "the runs page after the login",
            "return location.pathname === '/runs' && !!document.getElementById('logout');",
            json!([]),
        );
    }

    /// A `fetch` POST from the page; its status.
    fn post_status(&self, path: &str, fields: Value) -> u16 {
        let v = self.js_async(
            "const done = arguments[arguments.length - 1];
             const body = new URLSearchParams(arguments[1]);
             fetch(arguments[0], {method: 'POST', body, redirect: 'manual', credentials: 'same-origin'})
               .then(r => done(r.status)).catch(e => done(String(e)));",
            json!([path, fields]),
        );
        v.as_u64().unwrap_or_else(|| panic!("POST {path}: {v}")) as u16
    }

    /// Saves a picture of the page when `ORCH_WEB_SCREENSHOTS` names a
    /// folder.
    fn screenshot(&self, name: &str) {
        let Some(dir) = std::env::var_os("ORCH_WEB_SCREENSHOTS") else {
            return;
        };
        let v = self.call("GET", &self.s("/screenshot"), None);
        let png = base64_decode(v.as_str().unwrap_or_default());
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        std::fs::write(PathBuf::from(dir).join(format!("{name}.png")), png).unwrap();
    }

    /// Ends the session and the driver, and says which of their
    /// processes outlived them (none, or the test fails).
    fn close(mut self) -> Vec<u32> {
        let _ = self.http.call("DELETE", &self.s(""), None);
        self.session.clear();
        self.kill()
    }

    fn kill(&mut self) -> Vec<u32> {
        let pgid = self.driver.id();
        // SAFETY: kill(2) on the process group this test started.
        unsafe {
            libc::killpg(pgid as libc::pid_t, libc::SIGKILL);
        }
        let _ = self.driver.wait();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = group_members(pgid);
            if left.is_empty() || Instant::now() > deadline {
                return left;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            self.kill();
        }
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for v in text.bytes().filter_map(value) {
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// A server with users `ada` (operator) and `vic` (viewer); an API
/// client for ada.
fn setup() -> (Space, Served, Client) {
    let space = Space::new();
    let ada = user_token(&space, "ada", "operator");
    user_token(&space, "vic", "viewer");
    let server = serve(&space, &[]);
    let api = Client::new(&server.base, Some(ada));
    (space, server, api)
}

fn publish(api: &Client, name: &str, yaml: &str, message: &str) {
    let r = api
        .call(
            "PUT",
            &format!("/api/v1/workflows/{name}"),
            Some(
                &json!({"message": message, "files": [{"path": "workflow.yaml", "content": yaml}]}),
            ),
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
}

fn start(api: &Client, name: &str) -> String {
    let r = api
        .call(
            "POST",
            &format!("/api/v1/workflows/{name}/runs"),
            Some(&json!({"params": {}})),
        )
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()["run"].as_str().unwrap().to_string()
}

fn wait_ended(api: &Client, run: &str) -> String {
    let w = api
        .get(&format!("/api/v1/runs/{run}/wait?timeout=60"))
        .unwrap();
    assert_eq!(w["ended"], true, "{w}");
    w["status"]["status"].as_str().unwrap().to_string()
}

/// A picture's zoom, its viewBox and its whole viewBox.
fn view_of(v: &Value) -> (f64, String, String) {
    (
        v[0].as_f64().unwrap_or_else(|| panic!("{v}")),
        v[1].as_str().unwrap_or_default().to_string(),
        v[2].as_str().unwrap_or_default().to_string(),
    )
}

/// A node's state as the run page's nodes table shows it.
const NODE_STATE: &str = "const rows = [...document.querySelectorAll('#nodes-table tbody tr')];
     const row = rows.find(r => r.cells[0].textContent === arguments[0]);
     return !!row && row.cells[3].textContent.includes(arguments[1]);";

#[test]
fn an_operator_watches_steers_and_edits_in_a_browser() {
    let (space, server, api) = setup();
    let gate = |n: u32| space.path().join(format!("gate{n}"));
    publish(
        &api,
        "hello",
        "name: hello\ntasks:\n  - id: greet\n    command: echo hello\n",
        "first",
    );
    let done = start(&api, "hello");
    assert_eq!(wait_ended(&api, &done), "succeeded");
    let steps = format!(
        "name: steps\ntasks:\n  - id: a\n    command: \"echo start-a; while [ ! -e {g1} ]; do sleep 0.05; done; echo done-a\"\n  - id: b\n    command: \"echo start-b; while [ ! -e {g2} ]; do sleep 0.05; done; echo done-b\"\n    after: [a]\n",
        g1 = gate(1).display(),
        g2 = gate(2).display()
    );
    publish(&api, "steps", &steps, "two steps behind gates");
    publish(
        &api,
        "nap",
        "name: nap\ntasks:\n  - id: nap\n    command: sleep 300\n",
        "a long nap",
    );
    publish(
        &api,
        "approval",
        "name: approval\ntasks:\n  - id: approve\n    input: true\n  - id: ship\n    command: echo shipped\n    inputs: {ok: {\"$output\": approve}}\n",
        "wait for a person",
    );

    let b = Browser::start(&space, &server.base);
    // Not signed in: every page leads to the login.
    b.go("/runs");
    b.wait_until(
        "the login page",
        "return location.pathname === '/login' && !!document.getElementById('signin');",
        json!([]),
    );
    b.login("ada", "ada-secret-pw");

    // The run that succeeded, in the list, and its page with its picture.
    b.wait_until(
        "the succeeded run in the list",
        "return [...document.querySelectorAll('#runs tbody tr')].some(r => r.cells[0].textContent === arguments[0] && r.cells[2].textContent.includes('succeeded'));",
        json!([done]),
    );
    b.go(&format!("/runs/{done}"));
    assert_eq!(
        b.js(
            "return document.getElementById('status').dataset.status;",
            json!([])
        ),
        "succeeded"
    );
    b.wait_until(
        "the picture of the run",
        "const svg = document.querySelector('#picture svg'); return !!svg && svg.textContent.includes('greet');",
        json!([]),
    );
    // State by icon as well as colour: on the node and in the legend.
    b.wait_until(
        "the succeeded node's icon",
        "const i = document.querySelector('#picture svg text.state-icon.succeeded[data-id=\"greet\"]'); return !!i && i.textContent.startsWith('✔') && [...document.querySelectorAll('#picture svg g.legend text')].some(t => t.textContent === '✔ succeeded');",
        json!([]),
    );
    b.screenshot("run");

    // A run started from its workflow's page; its picture and nodes
    // change while it runs, without reloading the page.
    b.go("/workflows/steps");
    b.click("#run");
    b.wait_until(
        "node a running on the run page",
        NODE_STATE,
        json!(["a", "running"]),
    );
    let run = b
        .js(
            "return document.getElementById('live').dataset.run;",
            json!([]),
        )
        .as_str()
        .unwrap()
        .to_string();
    b.js("window.__same_page = true;", json!([]));
    let svg_before = b.js(
        "return document.querySelector('#picture svg').outerHTML;",
        json!([]),
    );
    let event_before = b
        .js(
            "return Number(document.getElementById('live').dataset.event);",
            json!([]),
        )
        .as_u64()
        .unwrap();
    std::fs::write(gate(1), "").unwrap();
    b.wait_until(
        "node a succeeded and b running, live",
        NODE_STATE,
        json!(["a", "succeeded"]),
    );
    b.wait_until("node b running, live", NODE_STATE, json!(["b", "running"]));
    b.wait_until(
        "b's icon redrawn live",
        "const i = document.querySelector('#picture svg text.state-icon.running[data-id=\"b\"]'); return !!i && i.textContent.startsWith('▶');",
        json!([]),
    );
    b.wait_until(
        "the picture redrawn",
        "return document.querySelector('#picture svg').outerHTML !== arguments[0] && Number(document.getElementById('picture').dataset.event) > arguments[1];",
        json!([svg_before, event_before]),
    );
    assert_eq!(b.js("return window.__same_page === true;", json!([])), true);

    // Node b's log follows while it runs.
    b.go(&format!("/runs/{run}/nodes/b"));
    b.wait_until(
        "b's first line",
        "return document.getElementById('log').textContent.includes('start-b');",
        json!([]),
    );
    b.js("window.__same_page = true;", json!([]));
    std::fs::write(gate(2), "").unwrap();
    b.wait_until(
        "b's last line, followed",
        "return document.getElementById('log').textContent.includes('done-b') && document.getElementById('log').dataset.done === 'true';",
        json!([]),
    );
    assert_eq!(b.js("return window.__same_page === true;", json!([])), true);
    assert_eq!(wait_ended(&api, &run), "succeeded");

    // The slider: the picture at the first event has no node b yet.
    b.go(&format!("/runs/{run}"));
    let now_svg = b.js(
        "return document.querySelector('#picture svg').outerHTML;",
        json!([]),
    );
    b.js(
        "const s = document.getElementById('at'); s.value = '1'; s.dispatchEvent(new Event('input'));",
        json!([]),
    );
    b.wait_until(
        "the picture at event 1",
        "return document.getElementById('picture').dataset.event === '1' && document.querySelector('#picture svg').outerHTML !== arguments[0] && document.getElementById('at-label').textContent.startsWith('event 1 of');",
        json!([now_svg]),
    );

    // Zoom and pan: the buttons narrow the view, a drag moves it, a
    // redraw (the slider) keeps it, and "whole" brings the whole back.
    const VIEW: &str = "const p = document.getElementById('picture'); const svg = p.querySelector('svg'); return [Number(p.dataset.zoom), svg.getAttribute('viewBox'), svg.dataset.whole];";
    let (zoom, _, whole) = view_of(&b.js(VIEW, json!([])));
    assert_eq!(zoom, 1.0);
    b.click("#zoom-in");
    b.click("#zoom-in");
    let (zoom, zoomed, _) = view_of(&b.js(VIEW, json!([])));
    assert!(zoom > 2.0, "{zoom}");
    assert_ne!(zoomed, whole);
    b.js(
        "const p = document.getElementById('picture'); const r = p.querySelector('svg').getBoundingClientRect();
         const at = (t, x, y) => p.dispatchEvent(new PointerEvent(t, {clientX: x, clientY: y, pointerId: 1, bubbles: true}));
         at('pointerdown', r.left + 200, r.top + 100); at('pointermove', r.left + 120, r.top + 60); at('pointerup', r.left + 120, r.top + 60);",
        json!([]),
    );
    let (zoom_panned, panned, _) = view_of(&b.js(VIEW, json!([])));
    assert_eq!(zoom_panned, zoom, "a drag pans, it does not zoom");
    assert_ne!(panned, zoomed, "the drag moved the view");
    b.js(
        "const s = document.getElementById('at'); s.value = '2'; s.dispatchEvent(new Event('input'));",
        json!([]),
    );
    b.wait_until(
        "the picture at event 2, still zoomed",
        "const p = document.getElementById('picture'); return p.dataset.event === '2' && Number(p.dataset.zoom) > 2;",
        json!([]),
    );
    b.click("#zoom-fit");
    let (zoom, fit, whole) = view_of(&b.js(VIEW, json!([])));
    assert_eq!((zoom, fit), (1.0, whole));

    // Pause, unpause and cancel a long run with the buttons.
    let nap = start(&api, "nap");
    b.go(&format!("/runs/{nap}"));
    b.wait_until("the nap running", NODE_STATE, json!(["nap", "running"]));
    b.click("form[action$='/pause'] button");
    b.wait_until(
        "the run paused",
        "const s = document.getElementById('status'); return !!s && s.dataset.status === 'paused' && !!document.querySelector(\"form[action$='/unpause']\");",
        json!([]),
    );
    b.click("form[action$='/unpause'] button");
    b.wait_until(
        "the run running again",
        "const s = document.getElementById('status'); return !!s && s.dataset.status === 'running' && !!document.querySelector(\"form[action$='/pause']\");",
        json!([]),
    );
    // A post without the form token, or with a wrong one, is refused and
    // changes nothing.
    assert_eq!(
        b.post_status(&format!("/runs/{nap}/cancel"), json!({})),
        403
    );
    assert_eq!(
        b.post_status(
            &format!("/runs/{nap}/cancel"),
            json!({"csrf": "0".repeat(64)})
        ),
        403
    );
    assert_eq!(
        api.get(&format!("/api/v1/runs/{nap}")).unwrap()["status"],
        "running"
    );
    b.click("form[action$='/cancel'] button");
    b.wait_until(
        "the run cancelled",
        "const s = document.getElementById('status'); return !!s && s.dataset.status === 'cancelled' && !document.getElementById('actions');",
        json!([]),
    );
    assert_eq!(wait_ended(&api, &nap), "cancelled");

    // Approve an input node: `true` becomes its output.
    let approval = start(&api, "approval");
    b.go(&format!("/runs/{approval}"));
    b.wait_until(
        "the input waiting",
        NODE_STATE,
        json!(["approve", "waiting"]),
    );
    b.click("button.approve");
    b.wait_until(
        "the run succeeded after the approval",
        "const s = document.getElementById('status'); return !!s && s.dataset.status === 'succeeded';",
        json!([]),
    );
    let out = api
        .get(&format!("/api/v1/runs/{approval}/nodes/approve"))
        .unwrap();
    assert_eq!(out["output"], true, "{out}");

    // The editor: an error is shown at its line, with the text kept; the
    // fixed file is published as a commit with the message (markup in it
    // is shown as text, never run).
    b.go("/workflows");
    b.type_into("#new input[name=name]", "edited");
    b.click("#new button");
    b.wait_until(
        "the editor",
        "return location.pathname === '/workflows/edited/edit' && !!document.getElementById('content-0');",
        json!([]),
    );
    // Validated as it is typed: the error under the text, at its line
    // and column, with nothing committed; then valid once fixed.
    b.wait_until(
        "the first file checked valid",
        "return document.getElementById('check-0').textContent.includes('valid');",
        json!([]),
    );
    b.set_value(
        "#content-0",
        "name: edited\ntasks:\n  - nme: a\n    command: echo a\n",
    );
    b.js(
        "document.getElementById('content-0').dispatchEvent(new Event('input', {bubbles: true}));",
        json!([]),
    );
    b.wait_until(
        "the error as it is typed, at its line and column",
        "const c = document.getElementById('check-0'); return c.classList.contains('bad') && c.dataset.line === '3' && c.textContent.includes('line 3, column 5') && c.textContent.includes('workflow.yaml:3:5') && c.querySelector('pre').textContent.includes('3 |   - nme: a') && document.getElementById('content-0').getAttribute('aria-invalid') === 'true';",
        json!([]),
    );
    b.screenshot("editor");
    assert_eq!(
        api.call("GET", "/api/v1/workflows/edited", None)
            .unwrap()
            .status,
        404,
        "a check commits nothing"
    );
    // The check is a POST like any other: without the form token, 403.
    assert_eq!(
        b.post_status(
            "/workflows/edited/check",
            json!({"path": "workflow.yaml", "content": "name: edited\ntasks: []\n"})
        ),
        403
    );
    b.type_into("#message", "broken");
    b.click("#publish");
    b.wait_until(
        "the error at its line and column",
        "const e = document.getElementById('error'); return !!e && e.textContent.includes('workflow.yaml:3:5') && document.getElementById('content-0').value.includes('nme: a');",
        json!([]),
    );
    let evil = "<script>alert(1)</script> first version";
    b.set_value(
        "#content-0",
        "name: edited\ntasks:\n  - id: a\n    command: echo \"<b>bold</b>\"\n",
    );
    b.type_into("#message", evil);
    b.click("#publish");
    b.wait_until(
        "the new commit in the history",
        "const h = document.getElementById('history'); return location.pathname === '/workflows/edited' && !!h && h.textContent.includes(arguments[0]);",
        json!([evil]),
    );
    assert_eq!(
        b.js(
            "return [document.scripts.length, document.querySelectorAll('main b').length, document.querySelector('pre.file').textContent.includes('<b>bold</b>')];",
            json!([])
        ),
        json!([1, 0, true]),
        "outside text is escaped, never markup"
    );
    let history = api.get("/api/v1/workflows/edited/history").unwrap();
    assert_eq!(history["versions"][0]["message"], evil, "{history}");
    assert_eq!(history["versions"][0]["author"], "ada", "{history}");
    assert_eq!(history["versions"].as_array().unwrap().len(), 1);

    // A second version and its diff.
    b.go("/workflows/edited/edit");
    b.set_value(
        "#content-0",
        "name: edited\ntasks:\n  - id: a\n    command: echo two\n",
    );
    b.type_into("#message", "second");
    b.click("#publish");
    b.wait_until(
        "the diff link",
        "return !!document.querySelector('#history a[href*=\"/diff?\"]');",
        json!([]),
    );
    b.click("#history a[href*='/diff?']");
    b.wait_until(
        "the diff",
        "const add = [...document.querySelectorAll('pre.diff .add')].map(e => e.textContent); const del = [...document.querySelectorAll('pre.diff .del')].map(e => e.textContent); return add.some(t => t.includes('echo two')) && del.some(t => t.includes('<b>bold</b>'));",
        json!([]),
    );
    b.screenshot("diff");

    // Events, runners.
    b.go("/events");
    b.type_into("#event-key", "<img src=x onerror=alert(1)>");
    b.click("#push button");
    b.wait_until(
        "the pushed event, as text",
        "return document.getElementById('events').textContent.includes('<img src=x') && document.querySelectorAll('main img').length === 0;",
        json!([]),
    );
    b.go("/runners");
    assert!(b
        .text("#no-runners")
        .contains("this server runs tasks itself"));
    b.go("/workflows/steps");
    b.screenshot("workflow");

    // Log out: the session's token is revoked and pages lead to the
    // login again.
    b.click("#logout");
    b.wait_until(
        "the login page",
        "return location.pathname === '/login';",
        json!([]),
    );
    b.go("/runs");
    b.wait_until(
        "the login page again",
        "return location.pathname === '/login';",
        json!([]),
    );
    let store = space.store();
    let web: Vec<_> = store
        .tokens(Some("ada"))
        .unwrap()
        .into_iter()
        .filter(|t| t.name == "web")
        .collect();
    assert_eq!(web.len(), 1);
    assert!(
        web[0].revoked_ms.is_some(),
        "the session's token is revoked"
    );
    let left = b.close();
    assert!(
        left.is_empty(),
        "browser processes outlived the test: {left:?}"
    );
}

#[test]
fn a_viewer_sees_no_buttons_and_a_forced_post_is_refused() {
    let (space, server, api) = setup();
    publish(
        &api,
        "nap",
        "name: nap\ntasks:\n  - id: nap\n    command: sleep 300\n",
        "a long nap",
    );
    let nap = start(&api, "nap");
    let b = Browser::start(&space, &server.base);
    // A wrong password is refused.
    b.go("/login");
    b.type_into("#user", "vic");
    b.type_into("#password", "not the password");
    b.click("#signin");
    b.wait_until(
        "the refusal",
        "const e = document.getElementById('error'); return !!e && e.textContent.includes('wrong user name or password');",
        json!([]),
    );
    b.login("vic", "vic-secret-pw");
    b.go(&format!("/runs/{nap}"));
    b.wait_until("the nap running", NODE_STATE, json!(["nap", "running"]));
    assert_eq!(
        b.js(
            "return [document.querySelectorAll('form.action').length, !!document.getElementById('actions')];",
            json!([])
        ),
        json!([0, false]),
        "a viewer sees no buttons"
    );
    b.go("/workflows/nap/edit");
    assert_eq!(
        b.js(
            "return [!!document.getElementById('publish'), document.getElementById('content-0').readOnly];",
            json!([])
        ),
        json!([false, true])
    );
    assert_eq!(
        b.js(
            "return [document.getElementById('editor').dataset.check === undefined, document.getElementById('check-0').textContent];",
            json!([])
        ),
        json!([true, ""]),
        "a viewer's editor is not checked as it is typed"
    );
    // A post with the session's own form token, forced: refused by role.
    let csrf = b.js(
        "return document.querySelector('nav input[name=csrf]').value;",
        json!([]),
    );
    assert_eq!(
        b.post_status(
            "/pipelines/backfill",
            json!({"csrf": csrf, "pipeline": "daily", "from": "2026-01-01", "to": "2026-01-02"})
        ),
        403
    );
    assert_eq!(
        b.post_status(
            "/workflows/nap/check",
            json!({"csrf": csrf, "path": "workflow.yaml", "content": "name: nap\ntasks: []\n"})
        ),
        403
    );
    assert_eq!(
        b.post_status(&format!("/runs/{nap}/cancel"), json!({"csrf": csrf})),
        403
    );
    assert_eq!(
        b.post_status(
            "/workflows/nap/edit",
            json!({"csrf": csrf, "message": "x", "path": "workflow.yaml", "content": "name: nap\ntasks: []\n"})
        ),
        403
    );
    assert_eq!(
        api.get(&format!("/api/v1/runs/{nap}")).unwrap()["status"],
        "running"
    );
    let left = b.close();
    assert!(
        left.is_empty(),
        "browser processes outlived the test: {left:?}"
    );
    let r = api.call("POST", &format!("/api/v1/runs/{nap}/cancel"), None);
    assert_eq!(r.unwrap().status, 200);
}

/// The rows of the runs table: `[run, workflow, status, started, took,
/// ended, nodes]` as text.
const RUN_ROWS: &str = "return [...document.querySelectorAll('#runs tbody tr')].map(r => [...r.cells].map(c => c.textContent));";

fn run_rows(b: &Browser) -> Vec<Vec<String>> {
    serde_json::from_value(b.js(RUN_ROWS, json!([]))).unwrap()
}

#[test]
fn expected_times_a_time_filter_a_rejection_and_a_backfill() {
    let space = Space::new();
    let ada = user_token(&space, "ada", "operator");
    let folder = space.path().join("pipelines");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(
        folder.join("daily.yaml"),
        "name: daily\nschedule: \"0 0 0 * * *\"\ntasks:\n  - id: stamp\n    command: echo stamped\n",
    )
    .unwrap();
    let server = serve(&space, &["--pipelines", folder.to_str().unwrap()]);
    let api = Client::new(&server.base, Some(ada));
    let gate = space.path().join("gate");
    publish(
        &api,
        "pair",
        &format!(
            "name: pair\ntasks:\n  - id: a\n    command: \"while [ ! -e {} ]; do sleep 0.05; done\"\n  - id: b\n    command: echo b\n    after: [a]\n",
            gate.display()
        ),
        "a behind a gate, then b",
    );
    publish(
        &api,
        "approval",
        "name: approval\ntasks:\n  - id: approve\n    input: true\n  - id: ship\n    command: echo shipped\n    inputs: {ok: {\"$output\": approve}}\n",
        "wait for a person",
    );
    // One run for the history the estimates come from; a second that
    // waits at its gate.
    std::fs::write(&gate, "").unwrap();
    let first = start(&api, "pair");
    assert_eq!(wait_ended(&api, &first), "succeeded");
    std::fs::remove_file(&gate).unwrap();
    let second = start(&api, "pair");

    let b = Browser::start(&space, &server.base);
    b.login("ada", "ada-secret-pw");

    // The runs: the running one's time so far and expected end, the
    // ended one's end.
    b.go("/runs?workflow=pair");
    b.wait_until(
        "the running run's time so far and expected end",
        "return [...document.querySelectorAll('#runs tbody tr')].some(r => r.cells[0].textContent === arguments[0] && r.cells[4].textContent.includes('so far') && r.cells[5].textContent.startsWith('≈ 20'));",
        json!([second]),
    );
    let rows = run_rows(&b);
    let ended = rows.iter().find(|r| r[0] == first).expect("the first run");
    assert!(ended[5].starts_with("20"), "{ended:?}");
    assert!(ended[4].ends_with(" s"), "{ended:?}");

    // The time filter: both runs started this century, none before 2000
    // or after 2999; a moment that is none is refused with the field.
    b.go("/runs?workflow=pair&from=2000-01-01&to=2999-01-01T00:00");
    assert_eq!(run_rows(&b).len(), 2, "{:?}", run_rows(&b));
    b.type_into("#from", "2999-01-01");
    b.click("#filter button");
    b.wait_until(
        "no run after 2999",
        "return location.search.includes('from=2999-01-01') && !!document.getElementById('no-runs');",
        json!([]),
    );
    assert_eq!(
        b.js("return document.getElementById('from').value;", json!([])),
        "2999-01-01"
    );
    b.go("/runs?to=2000-01-01T00:00:00Z");
    assert!(b.text("#no-runs").contains("No runs match"));
    b.go("/runs?from=yesterday");
    assert!(
        b.text("#error").contains("field `from`"),
        "{}",
        b.text("main")
    );
    b.go("/runs");
    b.screenshot("runs");

    // The run: node b's expected start while a runs, and the run's
    // expected end.
    b.go(&format!("/runs/{second}"));
    b.wait_until("a running", NODE_STATE, json!(["a", "running"]));
    b.wait_until(
        "b's expected start",
        "const row = [...document.querySelectorAll('#nodes-table tbody tr')].find(r => r.cells[0].textContent === 'b'); return !!row && row.cells[7].textContent.startsWith('≈ 20') && !!row.cells[7].querySelector('[data-ms]');",
        json!([]),
    );
    assert!(b.text("#expected").starts_with("20"), "{}", b.text("main"));
    b.screenshot("run-live");
    std::fs::write(&gate, "").unwrap();
    assert_eq!(wait_ended(&api, &second), "succeeded");

    // The workflow: its expected duration, the median of its runs.
    b.go("/workflows/pair");
    assert!(
        b.text("#expected-duration").contains("median of 2 runs"),
        "{}",
        b.text("main")
    );
    // Run it with parameters that are not an object: refused, said why.
    b.type_into("input[name=params]", "[1]");
    b.click("#run");
    b.wait_until(
        "the refusal of the params",
        "const e = document.getElementById('error'); return !!e && e.textContent.includes('must be a JSON object');",
        json!([]),
    );

    // Reject an approval: `false` becomes the input's output.
    let approval = start(&api, "approval");
    b.go(&format!("/runs/{approval}"));
    b.wait_until(
        "the input waiting",
        NODE_STATE,
        json!(["approve", "waiting"]),
    );
    b.click("button.reject");
    b.wait_until(
        "the approval rejected",
        NODE_STATE,
        json!(["approve", "succeeded"]),
    );
    wait_ended(&api, &approval);
    let out = api
        .get(&format!("/api/v1/runs/{approval}/nodes/approve"))
        .unwrap();
    assert_eq!(out["output"], false, "{out}");

    // A backfill of the folder's daily pipeline: three fire times, each
    // run to its end, the runs page showing them.
    b.go("/workflows");
    b.wait_until(
        "the backfill form",
        "const s = document.getElementById('backfill-pipeline'); return !!s && [...s.options].some(o => o.value === 'daily');",
        json!([]),
    );
    let csrf = b.js(
        "return document.querySelector('#backfill input[name=csrf]').value;",
        json!([]),
    );
    assert_eq!(
        b.post_status(
            "/pipelines/backfill",
            json!({"csrf": csrf, "pipeline": "daily", "from": "2026-01-03", "to": "2026-01-01"})
        ),
        400,
        "a range that ends before it starts"
    );
    assert_eq!(
        b.post_status(
            "/pipelines/backfill",
            json!({"csrf": csrf, "pipeline": "nope", "from": "2026-01-01", "to": "2026-01-02"})
        ),
        404
    );
    b.js(
        "document.getElementById('backfill-pipeline').value = 'daily'; document.getElementById('backfill-reprocess').value = 'missing';",
        json!([]),
    );
    b.type_into("#backfill-from", "2026-01-01");
    b.type_into("#backfill-to", "2026-01-03T12:00");
    b.click("#backfill-start");
    b.wait_until(
        "the pipeline's runs",
        "return location.pathname === '/runs' && location.search.includes('workflow=daily');",
        json!([]),
    );
    let deadline = Instant::now() + DEADLINE;
    loop {
        let list = api.get("/api/v1/runs?workflow=daily").unwrap();
        let runs = list["runs"].as_array().cloned().unwrap_or_default();
        if runs.len() == 3 && runs.iter().all(|r| r["status"] == "succeeded") {
            let mut fired: Vec<String> = runs
                .iter()
                .map(|r| r["fired_at"].as_str().unwrap_or_default().to_string())
                .collect();
            fired.sort();
            assert_eq!(
                fired.iter().map(|f| &f[..10]).collect::<Vec<_>>(),
                ["2026-01-01", "2026-01-02", "2026-01-03"],
                "{list}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "the backfill's runs: {list}");
        std::thread::sleep(Duration::from_millis(200));
    }
    b.go("/runs?workflow=daily");
    assert_eq!(run_rows(&b).len(), 3, "{:?}", run_rows(&b));

    let left = b.close();
    assert!(
        left.is_empty(),
        "browser processes outlived the test: {left:?}"
    );
}

/// The rows of a table as text, by its id.
const TABLE_ROWS: &str = "return [...document.querySelectorAll('#' + arguments[0] + ' tbody tr')].map(r => [...r.cells].map(c => c.textContent));";

fn table_rows(b: &Browser, id: &str) -> Vec<Vec<String>> {
    serde_json::from_value(b.js(TABLE_ROWS, json!([id]))).unwrap()
}

#[test]
fn runners_and_queues_show_a_real_runner_and_are_steered() {
    use crate::runners::{runner, runner_token_of};
    let (space, server, api) = setup();
    let token = runner_token_of(&space, "ada");
    let blue = runner(&space, &server, &token, "blue", "cpus=1,blue");
    // One attempt the blue runner holds, one that no runner can serve.
    publish(
        &api,
        "held",
        "name: held\ntasks:\n  - id: nap\n    command: sleep 300\n    requires: {labels: [blue]}\n",
        "a nap on the blue runner",
    );
    publish(
        &api,
        "stranded",
        "name: stranded\ntasks:\n  - id: red\n    command: 'true'\n    requires: {labels: [red]}\n",
        "nobody is red",
    );
    let held = start(&api, "held");
    let stranded = start(&api, "stranded");
    let deadline = Instant::now() + DEADLINE;
    loop {
        let rs = api.get("/api/v1/runners").unwrap();
        let qs = api.get("/api/v1/queues").unwrap();
        let red = qs
            .as_array()
            .unwrap()
            .iter()
            .any(|q| q["key"] == "labels=red");
        if rs[0]["running"] == 1 && red {
            break;
        }
        assert!(Instant::now() < deadline, "runners {rs}, queues {qs}");
        std::thread::sleep(Duration::from_millis(100));
    }

    let b = Browser::start(&space, &server.base);
    b.login("ada", "ada-secret-pw");
    b.go("/runners");
    let runners = table_rows(&b, "runners");
    assert_eq!(runners.len(), 1, "{runners:?}");
    let row = &runners[0];
    assert!(
        row[0].starts_with("blue") && row[0].contains(&blue.id),
        "{row:?}"
    );
    assert!(
        row[1].contains("1 cpu") && row[1].contains("labels: blue"),
        "{row:?}"
    );
    assert!(row[3].starts_with("1 of 2 slots"), "{row:?}");
    assert!(row[3].contains(&format!("{held}/nap #1")), "{row:?}");
    assert!(row[4].ends_with(" ago"), "{row:?}");
    assert!(row[5].contains("serving"), "{row:?}");
    assert!(row[6].contains("Drain"), "{row:?}");
    let queues = table_rows(&b, "queues");
    let red = queues
        .iter()
        .find(|q| q[0] == "labels=red")
        .unwrap_or_else(|| panic!("{queues:?}"));
    assert_eq!(red[1], "labels: red");
    assert_eq!((red[2].as_str(), red[4].as_str()), ("1", "0"), "{red:?}");
    assert!(red[5].contains("no runner can serve this"), "{red:?}");
    assert!(red[6].contains("Clear"), "{red:?}");
    let tinted = queues
        .iter()
        .find(|q| q[0] == "labels=blue")
        .unwrap_or_else(|| panic!("{queues:?}"));
    assert_eq!(
        (tinted[2].as_str(), tinted[4].as_str(), tinted[5].as_str()),
        ("0", "1", "blue")
    );
    assert_eq!(tinted[6], "", "nothing waits: nothing to clear");
    // The held attempt links to its node's page.
    assert_eq!(
        b.js(
            "return document.querySelector('#runners ul.held a').getAttribute('href');",
            json!([])
        ),
        json!(format!("/runs/{held}/nodes/nap"))
    );
    b.screenshot("runners");

    // A viewer sees the same page without a button, and a forced post is
    // refused.
    let viewer = Browser::start(&space, &server.base);
    viewer.login("vic", "vic-secret-pw");
    viewer.go("/runners");
    assert_eq!(table_rows(&viewer, "runners").len(), 1);
    assert_eq!(
        viewer.js(
            "return document.querySelectorAll('main form.action').length;",
            json!([])
        ),
        json!(0),
        "a viewer sees no buttons"
    );
    let csrf = viewer.js(
        "return document.querySelector('nav input[name=csrf]').value;",
        json!([]),
    );
    assert_eq!(
        viewer.post_status(
            &format!("/runners/{}/shutdown", blue.id),
            json!({"csrf": csrf})
        ),
        403
    );
    assert_eq!(
        viewer.post_status("/queues/labels%3Dred/clear", json!({"csrf": csrf})),
        403
    );
    // Without the form token even the operator is refused.
    assert_eq!(b.post_status("/queues/labels%3Dred/clear", json!({})), 403);
    let left = viewer.close();
    assert!(
        left.is_empty(),
        "browser processes outlived the test: {left:?}"
    );

    // Clearing the red queue fails its attempt.
    b.click("form[action='/queues/labels%3Dred/clear'] button");
    b.wait_until(
        "the red queue cleared",
        "return location.pathname === '/runners' && !!document.getElementById('runners') && ![...document.querySelectorAll('#queues tbody tr')].some(r => r.cells[0].textContent === 'labels=red');",
        json!([]),
    );
    assert_eq!(wait_ended(&api, &stranded), "failed");
    let node = api
        .get(&format!("/api/v1/runs/{stranded}/nodes/red"))
        .unwrap();
    let error = node["attempts"][0]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("cleared from queue `labels=red` by user `ada`"),
        "{node}"
    );

    // Draining the runner: it shows as draining, keeps its attempt and
    // loses its button.
    b.click(&format!(
        "form[action='/runners/{}/shutdown'] button",
        blue.id
    ));
    b.wait_until(
        "the runner draining",
        "const r = document.querySelector('#runners tbody tr'); return location.pathname === '/runners' && !!r && r.cells[5].textContent.includes('draining') && !r.querySelector('form');",
        json!([]),
    );
    let rs = api.get("/api/v1/runners").unwrap();
    assert_eq!(
        (rs[0]["draining"].clone(), rs[0]["running"].clone()),
        (json!(true), json!(1)),
        "{rs}"
    );
    let left = b.close();
    assert!(
        left.is_empty(),
        "browser processes outlived the test: {left:?}"
    );
    let r = api.call("POST", &format!("/api/v1/runs/{held}/cancel"), None);
    assert_eq!(r.unwrap().status, 200);
    drop(blue);
}
