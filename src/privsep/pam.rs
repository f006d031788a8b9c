//! `passdb = pam` (cargo feature `pam`): the password checked by the PAM stack of service `ironpop`, run in the privileged helper.
//!
//! Each login is one PAM transaction: `pam_start("ironpop", user)`,
//! `pam_authenticate` then `pam_acct_mgmt` (expired or locked accounts),
//! `pam_end`. The conversation answers the one password prompt
//! (`PAM_PROMPT_ECHO_OFF`) with the client's password and refuses any other
//! question; informational messages need no answer and are only logged.
//! The account itself (uid for the spool owner check, home for `%h`) comes
//! from getpwnam, as for `passdb = system`.
//!
//! Time: modules sleep on failure (pam_unix's two seconds, `nodelay`
//! being the administrator's choice, not ours). A `PAM_FAIL_DELAY` item
//! with a no-op function takes that sleep out of the helper — libpam then
//! calls the function instead of sleeping — so a failed login holds a
//! helper no longer than the hash check; the failure delay is the network
//! process's (`auth_fail_delay` and the per-address throttle). A module
//! that blocks for other reasons (a network directory) is bounded only by
//! the network process's reply timeout on the helper channel.
//!
//! The only `unsafe` is the FFI below: no maintained libpam binding fits
//! (a blocking, single-threaded helper that refuses every prompt but the
//! password), and five functions with a conversation callback are less
//! code than a binding's build machinery.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::ptr;

use nix::unistd::{Uid, User};

use super::checked::Checked;
use super::passwd_file::{accept, unusable_mailbox};
use super::system::SHADOW;
use super::system_decoy::{ShadowDecoy, LOGIN_DEFS};
use crate::account::AuthOutcome;

/// The service name: the stack is `/etc/pam.d/ironpop`.
pub const SERVICE: &CStr = c"ironpop";

const PAM_SUCCESS: c_int = 0;
const PAM_BUF_ERR: c_int = 5;
const PAM_AUTH_ERR: c_int = 7;
const PAM_USER_UNKNOWN: c_int = 10;
const PAM_MAXTRIES: c_int = 11;
const PAM_NEW_AUTHTOK_REQD: c_int = 12;
const PAM_ACCT_EXPIRED: c_int = 13;
const PAM_PERM_DENIED: c_int = 6;
const PAM_CRED_INSUFFICIENT: c_int = 8;
const PAM_CONV_ERR: c_int = 19;
const PAM_FAIL_DELAY: c_int = 10;
const PAM_PROMPT_ECHO_OFF: c_int = 1;
const PAM_PROMPT_ECHO_ON: c_int = 2;
const PAM_ERROR_MSG: c_int = 3;
const PAM_TEXT_INFO: c_int = 4;
const PAM_SILENT: c_int = 0x8000;
const PAM_DISALLOW_NULL_AUTHTOK: c_int = 0x0001;
/// Linux-PAM's bound on messages per conversation call.
const PAM_MAX_NUM_MSG: c_int = 32;

#[repr(C)]
struct PamHandle {
    _opaque: [u8; 0],
}

#[repr(C)]
struct PamMessage {
    msg_style: c_int,
    msg: *const c_char,
}

#[repr(C)]
struct PamResponse {
    resp: *mut c_char,
    resp_retcode: c_int,
}

type ConvFn =
    extern "C" fn(c_int, *mut *const PamMessage, *mut *mut PamResponse, *mut c_void) -> c_int;
type DelayFn = extern "C" fn(c_int, c_uint, *mut c_void);

#[repr(C)]
struct PamConv {
    conv: ConvFn,
    appdata_ptr: *mut c_void,
}

#[link(name = "pam")]
extern "C" {
    fn pam_start(
        service: *const c_char,
        user: *const c_char,
        conv: *const PamConv,
        pamh: *mut *mut PamHandle,
    ) -> c_int;
    fn pam_end(pamh: *mut PamHandle, status: c_int) -> c_int;
    fn pam_authenticate(pamh: *mut PamHandle, flags: c_int) -> c_int;
    fn pam_acct_mgmt(pamh: *mut PamHandle, flags: c_int) -> c_int;
    fn pam_set_item(pamh: *mut PamHandle, item_type: c_int, item: *const c_void) -> c_int;
    fn pam_strerror(pamh: *mut PamHandle, errnum: c_int) -> *const c_char;
}

/// How the conversation answers one PAM message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The password prompt: answer with the client's password.
    Password,
    /// A message that asks nothing (error or info text): no answer.
    Nothing,
    /// A question we cannot answer (echo-on prompt, a second password
    /// prompt, binary or unknown): the whole conversation fails.
    Refuse,
}

/// The conversation's rule. `answered` counts password prompts already
/// answered in this transaction: POP3 carries one secret, so a second
/// prompt (a one-time code, a "new password") is refused rather than
/// answered with the same password.
pub fn answer(style: c_int, answered: u32) -> Answer {
    match style {
        PAM_PROMPT_ECHO_OFF if answered == 0 => Answer::Password,
        PAM_ERROR_MSG | PAM_TEXT_INFO => Answer::Nothing,
        PAM_PROMPT_ECHO_ON | PAM_PROMPT_ECHO_OFF => Answer::Refuse,
        _ => Answer::Refuse,
    }
}

/// What the conversation function reads, behind `appdata_ptr`.
struct ConvData<'a> {
    password: &'a CStr,
    answered: u32,
}

/// PAM's conversation callback.
extern "C" fn converse(
    num_msg: c_int,
    msg: *mut *const PamMessage,
    resp: *mut *mut PamResponse,
    appdata: *mut c_void,
) -> c_int {
    if num_msg <= 0
        || num_msg > PAM_MAX_NUM_MSG
        || msg.is_null()
        || resp.is_null()
        || appdata.is_null()
    {
        return PAM_CONV_ERR;
    }
    // SAFETY: `appdata` is the `ConvData` that `authenticate` passed in
    // `PamConv` and that outlives the PAM transaction; libpam calls us on
    // the same thread, within pam_authenticate/pam_acct_mgmt.
    let data = unsafe { &mut *appdata.cast::<ConvData>() };
    let n = num_msg as usize;
    // SAFETY: calloc'ed so that every `resp` starts NULL; libpam frees the
    // array and each answer with free(), so they must come from malloc.
    let replies =
        unsafe { nix::libc::calloc(n, std::mem::size_of::<PamResponse>()) }.cast::<PamResponse>();
    if replies.is_null() {
        return PAM_BUF_ERR;
    }
    for i in 0..n {
        // SAFETY: Linux-PAM passes an array of `num_msg` message pointers.
        let m = unsafe { *msg.add(i) };
        let style = if m.is_null() {
            -1
        } else {
            unsafe { (*m).msg_style }
        };
        match answer(style, data.answered) {
            Answer::Password => {
                data.answered += 1;
                // SAFETY: strdup copies the NUL-terminated password into
                // malloc'ed memory that libpam will free.
                let copy = unsafe { nix::libc::strdup(data.password.as_ptr()) };
                if copy.is_null() {
                    free_replies(replies, n);
                    return PAM_BUF_ERR;
                }
                // SAFETY: `i < n`, inside the calloc'ed array.
                unsafe { (*replies.add(i)).resp = copy };
            }
            Answer::Nothing => {
                // SAFETY: `m` is non-null for these styles (style -1 is Refuse).
                let text = unsafe { CStr::from_ptr((*m).msg) }.to_string_lossy();
                log::debug!("PAM says: {text}");
            }
            Answer::Refuse => {
                log::warn!(
                    "PAM asked a question ironpop cannot answer (message style {style}); \
                     the {} stack must ask only for the password",
                    SERVICE.to_string_lossy()
                );
                free_replies(replies, n);
                return PAM_CONV_ERR;
            }
        }
    }
    // SAFETY: `resp` is libpam's out-parameter; ownership passes to it.
    unsafe { *resp = replies };
    PAM_SUCCESS
}

/// Frees a reply array we will not hand to libpam, wiping passwords.
fn free_replies(replies: *mut PamResponse, n: usize) {
    for i in 0..n {
        // SAFETY: `replies` holds `n` entries from calloc; non-null
        // answers come from strdup.
        unsafe {
            let r = (*replies.add(i)).resp;
            if !r.is_null() {
                let len = nix::libc::strlen(r);
                ptr::write_bytes(r, 0, len);
                nix::libc::free(r.cast());
            }
        }
    }
    // SAFETY: from calloc above.
    unsafe { nix::libc::free(replies.cast()) };
}

/// libpam calls this instead of sleeping after a failure.
extern "C" fn no_delay(_retval: c_int, _usec: c_uint, _appdata: *mut c_void) {}

/// The outcome of one PAM transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PamResult {
    Accepted,
    /// Wrong password, unknown, locked or expired account.
    Refused(String),
    /// PAM itself failed (misconfigured stack, module error).
    Failed(String),
}

/// Runs `pam_authenticate` (when `password` is given) and `pam_acct_mgmt`
/// for `user` in service [`SERVICE`].
pub fn transaction(user: &CStr, password: Option<&CStr>) -> PamResult {
    let mut data = ConvData {
        password: password.unwrap_or(c""),
        answered: 0,
    };
    let conv = PamConv {
        conv: converse,
        appdata_ptr: ptr::addr_of_mut!(data).cast(),
    };
    let mut handle: *mut PamHandle = ptr::null_mut();
    // SAFETY: all pointers are valid for the call; `conv` and `data` live
    // until pam_end below.
    let rc = unsafe { pam_start(SERVICE.as_ptr(), user.as_ptr(), &conv, &mut handle) };
    if rc != PAM_SUCCESS || handle.is_null() {
        return PamResult::Failed(format!("pam_start failed ({rc})"));
    }
    let no_delay: DelayFn = no_delay;
    // SAFETY: PAM_FAIL_DELAY takes a function pointer as the item.
    let rc = unsafe { pam_set_item(handle, PAM_FAIL_DELAY, no_delay as *const c_void) };
    let mut result = if rc != PAM_SUCCESS { Err(rc) } else { Ok(()) };
    let flags = PAM_SILENT | PAM_DISALLOW_NULL_AUTHTOK;
    if result.is_ok() && password.is_some() {
        // SAFETY: `handle` is live until pam_end.
        let rc = unsafe { pam_authenticate(handle, flags) };
        result = if rc == PAM_SUCCESS { Ok(()) } else { Err(rc) };
    }
    if result.is_ok() {
        // SAFETY: as above.
        let rc = unsafe { pam_acct_mgmt(handle, flags) };
        result = if rc == PAM_SUCCESS { Ok(()) } else { Err(rc) };
    }
    let outcome = match result {
        Ok(()) => PamResult::Accepted,
        Err(rc) => {
            // SAFETY: pam_strerror returns a static string (or NULL).
            let text = unsafe { pam_strerror(handle, rc) };
            let text = if text.is_null() {
                format!("PAM error {rc}")
            } else {
                unsafe { CStr::from_ptr(text) }
                    .to_string_lossy()
                    .into_owned()
            };
            match rc {
                PAM_AUTH_ERR
                | PAM_USER_UNKNOWN
                | PAM_MAXTRIES
                | PAM_NEW_AUTHTOK_REQD
                | PAM_ACCT_EXPIRED
                | PAM_PERM_DENIED
                | PAM_CRED_INSUFFICIENT => PamResult::Refused(text),
                _ => PamResult::Failed(text),
            }
        }
    };
    let status = match outcome {
        PamResult::Accepted => PAM_SUCCESS,
        _ => PAM_AUTH_ERR,
    };
    // SAFETY: ends the transaction started above; `handle` is not used again.
    unsafe { pam_end(handle, status) };
    outcome
}

/// `passdb = pam`: PAM decides, getpwnam names uid and home.
pub struct PamDb {
    mailbox_template: String,
    /// What an unknown user costs: PAM is not asked about it, so the
    /// system accounts' typical hash stands in for pam_unix's check.
    decoy: ShadowDecoy,
}

impl PamDb {
    pub fn new(mailbox_template: String) -> Result<PamDb, String> {
        if !std::path::Path::new("/etc/pam.d/ironpop").exists() {
            log::warn!(
                "passdb = pam: /etc/pam.d/ironpop does not exist; PAM falls back to \
                 /etc/pam.d/other (usually: deny everything)"
            );
        }
        Ok(PamDb {
            mailbox_template,
            decoy: ShadowDecoy::new(SHADOW.into(), LOGIN_DEFS.into()),
        })
    }

    fn account(&self, user: &str) -> Result<Option<User>, String> {
        if user.is_empty() || user.contains([':', '/', '\0', '\n']) {
            return Ok(None);
        }
        User::from_name(user).map_err(|e| format!("cannot look up user {user:?}: {e}"))
    }

    fn principal(&self, user: &str, account: &User) -> Checked {
        let owner = Some(Uid::from_raw(account.uid.as_raw()));
        accept(&self.mailbox_template, user, account.dir.to_str())
            .map(|accepted| (accepted, owner))
            .unwrap_or_else(|e| unusable_mailbox(user, &e))
    }

    fn run(&self, user: &str, password: Option<&[u8]>) -> Checked {
        let account = match self.account(user) {
            Ok(Some(a)) => a,
            Ok(None) => {
                // Unknown users cost a typical account's hash.
                if let Some(pw) = password {
                    self.decoy.get().spend(pw);
                }
                return (AuthOutcome::Rejected, None);
            }
            Err(e) => return (AuthOutcome::Unavailable(e), None),
        };
        let (Ok(c_user), Ok(c_password)) =
            (CString::new(user), password.map(CString::new).transpose())
        else {
            return (AuthOutcome::Rejected, None);
        };
        match transaction(&c_user, c_password.as_deref()) {
            PamResult::Accepted => self.principal(user, &account),
            PamResult::Refused(why) => {
                log::info!("login refused by PAM: account {user:?}: {why}");
                (AuthOutcome::Rejected, None)
            }
            PamResult::Failed(why) => (AuthOutcome::Unavailable(format!("PAM: {why}")), None),
        }
    }

    /// Password login: pam_authenticate + pam_acct_mgmt.
    pub fn verify_account(&self, user: &str, password: &[u8]) -> Checked {
        self.run(user, Some(password))
    }

    /// After another credential (a client certificate): pam_acct_mgmt only.
    pub fn lookup_account(&self, user: &str) -> Checked {
        self.run(user, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversation_answers_only_the_first_password_prompt() {
        assert_eq!(answer(PAM_PROMPT_ECHO_OFF, 0), Answer::Password);
        assert_eq!(answer(PAM_PROMPT_ECHO_OFF, 1), Answer::Refuse);
        assert_eq!(answer(PAM_PROMPT_ECHO_ON, 0), Answer::Refuse);
        assert_eq!(answer(PAM_ERROR_MSG, 0), Answer::Nothing);
        assert_eq!(answer(PAM_TEXT_INFO, 1), Answer::Nothing);
        assert_eq!(answer(5, 0), Answer::Refuse, "binary prompt");
        assert_eq!(answer(-1, 0), Answer::Refuse);
    }

    /// The callback itself, driven the way libpam drives it.
    fn converse_with(styles: &[c_int], password: &CStr) -> (c_int, Vec<Option<Vec<u8>>>) {
        let texts: Vec<CString> = styles
            .iter()
            .map(|s| CString::new(format!("m{s}")).unwrap())
            .collect();
        let msgs: Vec<PamMessage> = styles
            .iter()
            .zip(&texts)
            .map(|(&msg_style, t)| PamMessage {
                msg_style,
                msg: t.as_ptr(),
            })
            .collect();
        let mut ptrs: Vec<*const PamMessage> = msgs.iter().map(|m| m as *const _).collect();
        let mut data = ConvData {
            password,
            answered: 0,
        };
        let mut resp: *mut PamResponse = ptr::null_mut();
        let rc = converse(
            styles.len() as c_int,
            ptrs.as_mut_ptr(),
            &mut resp,
            ptr::addr_of_mut!(data).cast(),
        );
        let mut answers = Vec::new();
        if rc == PAM_SUCCESS {
            for i in 0..styles.len() {
                // SAFETY: test-side stand-in for libpam reading and freeing.
                unsafe {
                    let r = (*resp.add(i)).resp;
                    answers.push((!r.is_null()).then(|| CStr::from_ptr(r).to_bytes().to_vec()));
                    nix::libc::free(r.cast());
                }
            }
            unsafe { nix::libc::free(resp.cast()) };
        } else {
            assert!(resp.is_null(), "no replies handed out on failure");
        }
        (rc, answers)
    }

    #[test]
    fn conversation_callback_gives_the_password_and_refuses_questions() {
        let (rc, answers) = converse_with(&[PAM_TEXT_INFO, PAM_PROMPT_ECHO_OFF], c"s3cret");
        assert_eq!(rc, PAM_SUCCESS);
        assert_eq!(answers, vec![None, Some(b"s3cret".to_vec())]);
        for styles in [
            &[PAM_PROMPT_ECHO_ON][..],
            &[PAM_PROMPT_ECHO_OFF, PAM_PROMPT_ECHO_OFF],
            &[PAM_PROMPT_ECHO_OFF, 7],
        ] {
            assert_eq!(converse_with(styles, c"pw").0, PAM_CONV_ERR, "{styles:?}");
        }
        let mut none: *mut PamResponse = ptr::null_mut();
        assert_eq!(
            converse(0, ptr::null_mut(), &mut none, ptr::null_mut()),
            PAM_CONV_ERR
        );
    }
}
