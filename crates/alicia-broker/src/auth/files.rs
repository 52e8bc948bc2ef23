//! [`FileSecurity`]: the [`Security`] of a Mosquitto-style setup — `allow_anonymous`, a
//! `password_file` and an `acl_file` — built in one go so that a reload can swap it in whole.

use crate::auth::{Acl, Error, PasswordFile, SecurityConf};
use crate::security::{Access, Credentials, Identity, Refusal, Security};
use alicia_codec::reason;

/// Authentication and authorisation from Mosquitto's files.
#[derive(Debug)]
pub struct FileSecurity {
    allow_anonymous: bool,
    passwords: Option<PasswordFile>,
    acl: Option<Acl>,
}

impl FileSecurity {
    /// Loads the files named in `conf`. Any error leaves nothing half-loaded.
    pub fn load(conf: &SecurityConf) -> Result<FileSecurity, Error> {
        let passwords = conf.password_file.as_ref().map(PasswordFile::load).transpose()?;
        let acl = conf.acl_file.as_ref().map(Acl::load).transpose()?;
        Ok(FileSecurity { allow_anonymous: conf.allow_anonymous, passwords, acl })
    }

    /// Builds one from already loaded parts.
    pub fn new(allow_anonymous: bool, passwords: Option<PasswordFile>, acl: Option<Acl>) -> FileSecurity {
        FileSecurity { allow_anonymous, passwords, acl }
    }
}

impl Security for FileSecurity {
    fn authenticate(&self, creds: &Credentials<'_>) -> Result<Identity, Refusal> {
        // A verified client certificate whose CN is the identity needs no password.
        if let Some(identity) = &creds.info.cert_identity {
            return Ok(Identity::certificate(identity.clone()));
        }
        let refuse = |reason, why: &str| Err(Refusal { reason, why: why.to_string() });
        match (creds.username, &self.passwords) {
            (Some(user), Some(file)) => match creds.password {
                Some(pw) if file.verify(user, pw) => Ok(Identity::password(user)),
                _ => refuse(reason::BAD_USERNAME_OR_PASSWORD, "bad user name or password"),
            },
            // Mosquitto's behaviour: with anonymous access and no password file a user name is
            // accepted unchecked. The ACL sees it, but it proves nothing.
            (Some(user), None) if self.allow_anonymous => Ok(Identity::anonymous(Some(user.to_string()))),
            (None, _) if self.allow_anonymous => Ok(Identity::anonymous(None)),
            _ => refuse(reason::NOT_AUTHORIZED, "anonymous access is not allowed"),
        }
    }

    fn authorize(&self, client_id: &str, username: Option<&str>, access: Access, topic: &str) -> bool {
        self.acl.as_ref().is_none_or(|acl| acl.check(client_id, username, topic, access))
    }

    fn checks_reads(&self) -> bool {
        self.acl.is_some()
    }
}
