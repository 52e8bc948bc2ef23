//! Following one section of the configuration from a running service.

use alicia_sdk::{Link, LinkEvent, LinkOptions, ServiceConfig};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::service::config_topic;

/// One section of the announced configuration, kept current: a service creates it at start and
/// reads [`ConfigWatch::current`] or awaits [`ConfigWatch::changed`] to reload without restart.
///
/// ```no_run
/// # async fn run(sdk: alicia_sdk::ServiceConfig) {
/// let mut router = alicia_config::ConfigWatch::start(&sdk, "production", "router");
/// while let Some(section) = router.changed().await {
///     let cfg: alicia_config::RouterConfig = serde_json::from_value(section).unwrap();
///     // apply cfg.max_hops ...
/// }
/// # }
/// ```
pub struct ConfigWatch {
    rx: watch::Receiver<Option<(u64, Value)>>,
    link: Link,
    task: JoinHandle<()>,
}

impl ConfigWatch {
    /// Subscribes (own MQTT connection, `sdk`'s broker and credentials) to the retained
    /// configuration of `env` and keeps `section` of it.
    pub fn start(sdk: &ServiceConfig, env: &str, section: &str) -> ConfigWatch {
        let topic = config_topic(&sdk.topic_prefix, env);
        let name = sdk.name.clone().unwrap_or_else(|| "service".into());
        let id = format!("{name}-config-{:08x}", std::time::UNIX_EPOCH.elapsed().unwrap_or_default().subsec_nanos());
        let (link, mut events) = Link::connect(sdk, LinkOptions::new(id, [topic.clone()]).with_label("config watch"));
        let (tx, rx) = watch::channel(None);
        let section = section.to_string();
        let task = tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                let LinkEvent::Message(p) = ev else { continue };
                let (t, payload) = (String::from_utf8_lossy(&p.topic).into_owned(), p.payload);
                if t != topic {
                    continue;
                }
                let Ok(doc) = serde_json::from_slice::<Value>(&payload) else {
                    tracing::warn!(topic = %t, "configuration announcement is not JSON; ignored");
                    continue;
                };
                let version = doc.get("version").and_then(Value::as_u64).unwrap_or(0);
                let Some(values) = doc.get("config").and_then(|c| c.get(&section)).cloned() else { continue };
                tx.send_if_modified(|cur| match cur {
                    Some((_, v)) if *v == values => false,
                    _ => {
                        *cur = Some((version, values));
                        true
                    }
                });
            }
        });
        ConfigWatch { rx, link, task }
    }

    /// The section as last announced (`None` before the first announcement arrives).
    pub fn current(&self) -> Option<Value> {
        self.rx.borrow().as_ref().map(|(_, v)| v.clone())
    }

    /// The configuration version that last changed the section.
    pub fn version(&self) -> Option<u64> {
        self.rx.borrow().as_ref().map(|(n, _)| *n)
    }

    /// The section, typed.
    pub fn get<T: DeserializeOwned>(&self) -> Option<Result<T, serde_json::Error>> {
        self.current().map(serde_json::from_value)
    }

    /// Waits until the section differs from what was last seen through this watch, and returns
    /// it (`None` once the watch has stopped).
    pub async fn changed(&mut self) -> Option<Value> {
        self.rx.changed().await.ok()?;
        self.rx.borrow_and_update().as_ref().map(|(_, v)| v.clone())
    }

    /// Stops following.
    pub async fn close(self) {
        self.task.abort();
        self.link.close().await;
    }
}

impl Drop for ConfigWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}
