//! The registry on the bus: discovery topics and requests to its inbox.

use std::sync::Arc;

use alicia_envelope::{Envelope, MessageType, Value};
use alicia_sdk::{BusService, Context, HandlerResult, QoS, Refusal, ServiceError, Subscription};
use serde_json::json;

use crate::model::{check_device_id, kind, Device, Invalid};
use crate::registry::{RegisterError, Registry};

pub(crate) struct RegistryService {
    pub name: String,
    pub reg: Arc<Registry>,
    pub register: String,
    pub unregister: String,
    pub heartbeat: String,
}

impl RegistryService {
    pub fn new(name: String, reg: Arc<Registry>) -> Self {
        let p = reg.prefix().to_string();
        RegistryService {
            name,
            reg,
            register: format!("{p}/system/discovery/register"),
            unregister: format!("{p}/system/discovery/unregister"),
            heartbeat: format!("{p}/system/discovery/heartbeat"),
        }
    }
}

fn expects_reply(ctx: &Context, env: &Envelope) -> bool {
    env.message_type == MessageType::Request || ctx.response_topic().is_some()
}

fn refuse(code: &str, message: impl Into<String>) -> HandlerResult {
    Err(ServiceError::new(code, message).into())
}

fn list_answer(devices: &[Device]) -> Value {
    let devices: Vec<Value> = devices.iter().map(Device::to_json).collect();
    json!({ "count": devices.len(), "devices": devices })
}

/// `data.device_id`, checked.
fn device_id_of(data: &Value) -> Result<String, ServiceError> {
    match data.get("device_id") {
        Some(Value::String(id)) => {
            check_device_id("device_id", id).map_err(|e| ServiceError::new("invalid_request", e.to_string()))?;
            Ok(id.clone())
        }
        None | Some(Value::Null) => Err(ServiceError::new("invalid_request", "`device_id`: missing")),
        Some(other) => {
            Err(ServiceError::new("invalid_request", format!("`device_id`: must be a string, found {}", kind(other))))
        }
    }
}

/// Whether the sender may act for the device `claimed`: a device (by its broker login, or
/// without one by a `device_id:X` source) only for itself; a service (a password login, which
/// the ACL let publish here: a bridge for a radio network, say) for any device. Without the
/// broker's word a bare `source` that differs from the claimed id is taken for a service, as
/// nothing tells it apart from one.
fn impersonates(ctx: &Context, env: &Envelope, claimed: &str) -> Option<Invalid> {
    let sender = ctx.sending_device(env)?;
    (claimed != sender).then(|| {
        Invalid::new(
            "device_id",
            format!("{claimed:?} is not the sender, device {sender:?}: a device acts only for itself"),
        )
    })
}

/// Where a device learns why what it sent was refused: the device the broker says sent it,
/// else the device it claims to be.
fn answer_to<'a>(ctx: &'a Context, env: &'a Envelope, claimed: Option<&'a str>) -> Option<&'a str> {
    match ctx.sender() {
        Some(s) => s.device_id(),
        None => ctx.sending_device(env).or(claimed).or(Some(env.source.as_str()).filter(|s| !s.contains(':'))),
    }
}

impl RegistryService {
    /// Refuses `env`: to a requester as an error response (the runtime sends it); otherwise to
    /// the dead-letter topic with the reason and to the device's errors topic, so a device that
    /// only published an event still learns every problem.
    async fn refuse(&self, ctx: &Context, env: &Envelope, claimed: Option<&str>, error: ServiceError) -> HandlerResult {
        if expects_reply(ctx, env) {
            return Err(error.into());
        }
        let _ = ctx.bus().dead_letter(Refusal::from(&error), ctx.topic(), &env.to_vec()).await;
        if let Err(e) = ctx.answer_refusal(env, answer_to(ctx, env, claimed), &error).await {
            tracing::warn!(error = %e, "cannot answer a refused message");
        }
        Ok(None)
    }

    /// A registration from a discovery topic or the inbox.
    async fn register(&self, ctx: &Context, env: &Envelope, data: Value) -> HandlerResult {
        let via = format!("{} from {}", ctx.topic(), env.source);
        let claimed = data.get("device_id").and_then(Value::as_str).map(str::to_string);
        let result = match claimed.as_deref().and_then(|id| impersonates(ctx, env, id)) {
            Some(e) => Err(RegisterError::Invalid(e.into())),
            None => self.reg.register(data, &via),
        };
        match result {
            Ok((outcome, device)) => {
                tracing::info!(device_id = %device.reg.device_id, outcome = outcome.as_str(), "registration");
                Ok(Some(json!({
                    "status": outcome.as_str(),
                    "device_id": device.reg.device_id,
                    "device": device.to_json(),
                })))
            }
            Err(RegisterError::Invalid(e)) => {
                let code = if e.0.iter().any(|i| i.reason.contains("acts only for itself")) {
                    "forbidden"
                } else {
                    "invalid_registration"
                };
                let error = ServiceError::new(code, format!("invalid registration: {e}")).with_errors(e.to_json());
                self.refuse(ctx, env, claimed.as_deref(), error).await
            }
            Err(RegisterError::Registry(e)) => refuse("internal", e.to_string()),
        }
    }

    async fn unregister(&self, ctx: &Context, env: &Envelope) -> HandlerResult {
        let id = match device_id_of(&env.payload.data) {
            Ok(id) => id,
            Err(e) => {
                let e = ServiceError::new(e.code, format!("invalid unregistration: {}", e.message));
                return self.refuse(ctx, env, None, e).await;
            }
        };
        if let Some(e) = impersonates(ctx, env, &id) {
            return self.refuse(ctx, env, Some(&id), ServiceError::new("forbidden", e.to_string())).await;
        }
        let reason = format!("unregistered via {} by {}", ctx.topic(), env.source);
        match self.reg.unregister(&id, &reason) {
            Ok(Some(_)) => Ok(Some(json!({ "status": "removed", "device_id": id }))),
            Ok(None) => refuse("not_found", self.reg.not_found_reason(&id)),
            Err(e) => refuse("internal", e.to_string()),
        }
    }

    async fn heartbeat(&self, ctx: &Context, env: &Envelope) -> HandlerResult {
        let data = &env.payload.data;
        let id = match data.get("device_id").and_then(Value::as_str) {
            Some(id) => Some(id.to_string()),
            None => ctx.sending_device(env).map(str::to_string),
        };
        let Some(id) = id else {
            if data.get("service").is_some() {
                // A bus service's heartbeat (the SDK's); the registry tracks devices only.
                self.reg.metrics.hb_service.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            } else {
                let refusal = Refusal::new(
                    "invalid_heartbeat",
                    "heartbeat names no device (source `device_id:ID` or data.device_id) and no service",
                );
                let _ = ctx.bus().dead_letter(refusal, ctx.topic(), &env.to_vec()).await;
            }
            return Ok(None);
        };
        if let Some(e) = impersonates(ctx, env, &id) {
            let error = ServiceError::new("forbidden", format!("heartbeat refused: {e}"));
            return self.refuse(ctx, env, Some(&id), error).await;
        }
        match self.reg.heartbeat(&id) {
            Ok(true) => {}
            Ok(false) => tracing::debug!(device_id = %id, "heartbeat from an unregistered device"),
            Err(e) => tracing::error!(error = %e, "cannot record a heartbeat"),
        }
        Ok(None)
    }

    /// A request to the inbox: `{"action": ...}`, or a registration without an action.
    async fn request(&self, ctx: &Context, env: Envelope) -> HandlerResult {
        let data = env.payload.data.clone();
        let action = match data.get("action") {
            None | Some(Value::Null) if data.get("device_id").is_some() => "register".to_string(),
            None | Some(Value::Null) => {
                return refuse(
                    "invalid_request",
                    "`action`: missing (list, get, find, register, unregister; or send a registration)",
                )
            }
            Some(Value::String(a)) => a.clone(),
            Some(other) => {
                return refuse("invalid_request", format!("`action`: must be a string, found {}", kind(other)))
            }
        };
        match action.as_str() {
            "list" => Ok(Some(list_answer(&self.reg.list()))),
            "get" => {
                let id = device_id_of(&data)?;
                match self.reg.get(&id) {
                    Some(d) => Ok(Some(d.to_json())),
                    None => refuse("not_found", self.reg.not_found_reason(&id)),
                }
            }
            "find" => {
                let cap = match data.get("capability") {
                    Some(Value::String(c)) if !c.is_empty() => c.clone(),
                    _ => return refuse("invalid_request", "`capability`: missing (a capability name)"),
                };
                let devices = self.reg.find(&cap).map_err(|e| ServiceError::new("internal", e.to_string()))?;
                let mut answer = list_answer(&devices);
                answer["capability"] = json!(cap);
                Ok(Some(answer))
            }
            "register" => {
                let registration = match data.get("registration") {
                    Some(r @ Value::Object(_)) => r.clone(),
                    _ => {
                        let mut d = data;
                        if let Value::Object(m) = &mut d {
                            m.shift_remove("action");
                        }
                        d
                    }
                };
                self.register(ctx, &env, registration).await
            }
            "unregister" => self.unregister(ctx, &env).await,
            other => refuse(
                "unknown_action",
                format!("`action`: unknown action {other:?} (list, get, find, register, unregister)"),
            ),
        }
    }
}

impl BusService for RegistryService {
    fn name(&self) -> &str {
        &self.name
    }

    fn subscriptions(&self) -> Vec<Subscription> {
        vec![
            Subscription::new(self.register.clone()),
            Subscription::new(self.unregister.clone()),
            Subscription::new(self.heartbeat.clone()).with_qos(QoS::AtMostOnce),
        ]
    }

    async fn handle(&self, ctx: &Context, env: Envelope) -> HandlerResult {
        let topic = ctx.topic();
        if topic == self.register {
            let data = env.payload.data.clone();
            self.register(ctx, &env, data).await
        } else if topic == self.unregister {
            self.unregister(ctx, &env).await
        } else if topic == self.heartbeat {
            self.heartbeat(ctx, &env).await
        } else {
            self.request(ctx, env).await
        }
    }
}
