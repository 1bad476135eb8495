//! `auth.admin.v1.AdminService` over [`Accounts`], for callers whose token
//! carries the admin role.

use std::{sync::Arc, time::Instant};

use aws_lc_rs::hmac;
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use tonic::{Code, Request, Response, Status, metadata::MetadataMap};

use super::{
    CallLimit,
    admin_pb::{
        self, CreateUserRequest, DeleteUserResponse, ListUsersRequest, ListUsersResponse,
        RevokeUserSessionsResponse, SetPasswordRequest, SetPasswordResponse, SetRolesRequest, User,
        admin_service_server::AdminService, user_ref,
    },
    pb::ListSessionsResponse,
    service::{holding_role, instant, session},
    status::bad_request,
    trace::trace_id,
};
use crate::{
    auth::{Accounts, Authenticator, UserSession},
    domain::{InvalidInput, Password, Role, UserId, UserRef, Username},
    store::UserRecord,
};

/// ListUsers' page size when the request names none.
const DEFAULT_PAGE_SIZE: u32 = 100;
/// The largest page ListUsers returns.
const MAX_PAGE_SIZE: u32 = 1000;

/// The gRPC face of [`Accounts`].
#[derive(Debug, Clone)]
pub struct AdminApi {
    auth: Arc<Authenticator>,
    accounts: Accounts,
    /// The role every caller's token must carry.
    admin_role: Arc<[Role; 1]>,
    pages: PageTokenKey,
    limit: CallLimit,
}

impl AdminApi {
    /// Serves `accounts` to callers whose token `auth` finds valid and
    /// holding `admin_role`, sealing ListUsers' page tokens with `pages`;
    /// calls count against `limit` as AuthService's do.
    pub fn new(
        auth: Arc<Authenticator>,
        accounts: Accounts,
        admin_role: Role,
        pages: PageTokenKey,
        limit: CallLimit,
    ) -> Self {
        Self {
            auth,
            accounts,
            admin_role: Arc::new([admin_role]),
            pages,
            limit,
        }
    }

    /// Runs `call` for a caller holding the admin role, and logs the call
    /// with who made it and what it was about.
    async fn admin<T>(
        &self,
        method: &'static str,
        metadata: &MetadataMap,
        target: &str,
        call: impl Future<Output = Result<T, Status>>,
    ) -> Result<Response<T>, Status> {
        let started = Instant::now();
        let _in_flight = self.limit.enter()?;
        let (caller, result) = match self.caller(metadata) {
            Ok(caller) => (Some(caller), call.await),
            Err(refused) => (None, Err(refused)),
        };
        let code = result.as_ref().map_or_else(Status::code, |_| Code::Ok);
        let caller = caller.map_or_else(|| "-".to_owned(), |id| id.to_string());
        let trace_id = trace_id(metadata);
        tracing::info!(
            method,
            caller,
            user = target,
            ?code,
            latency_us = started.elapsed().as_micros(),
            trace_id,
            "admin rpc"
        );
        result.map(Response::new)
    }

    /// The id of the caller, when its token is valid and holds the role.
    fn caller(&self, metadata: &MetadataMap) -> Result<UserId, Status> {
        let claims = holding_role(&self.auth, metadata, &self.admin_role[0])?;
        Ok(UserId::from(claims.sub))
    }

    fn list_page(&self, request: &ListUsersRequest) -> Result<(Option<String>, u32), Status> {
        let size = match u32::try_from(request.page_size) {
            Ok(0) => DEFAULT_PAGE_SIZE,
            Ok(size) => size.min(MAX_PAGE_SIZE),
            Err(_) => {
                return Err(InvalidInput::new("page_size", "must not be negative").into());
            }
        };
        let after = if request.page_token.is_empty() {
            None
        } else {
            Some(self.pages.open(&request.page_token)?)
        };
        Ok((after, size))
    }
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn create_user(
        &self,
        request: Request<CreateUserRequest>,
    ) -> Result<Response<User>, Status> {
        let message = request.get_ref();
        self.admin(
            "CreateUser",
            request.metadata(),
            &format!("named {:?}", message.username),
            async {
                let username = Username::parse(message.username.clone())?;
                let password = Password::parse(message.password.clone())?;
                let roles = roles(&message.roles)?;
                Ok(user(self.accounts.add(&username, &password, &roles).await?))
            },
        )
        .await
    }

    async fn get_user(
        &self,
        request: Request<admin_pb::UserRef>,
    ) -> Result<Response<User>, Status> {
        let target = describe(Some(request.get_ref()));
        self.admin("GetUser", request.metadata(), &target, async {
            let which = user_ref(Some(request.get_ref()), "")?;
            Ok(user(self.accounts.get(&which).await?))
        })
        .await
    }

    async fn list_users(
        &self,
        request: Request<ListUsersRequest>,
    ) -> Result<Response<ListUsersResponse>, Status> {
        self.admin("ListUsers", request.metadata(), "-", async {
            let (after, size) = self.list_page(request.get_ref())?;
            let page = self.accounts.list(after.as_deref(), size).await?;
            Ok(ListUsersResponse {
                users: page.users.into_iter().map(user).collect(),
                next_page_token: page
                    .next
                    .map(|next| self.pages.seal(&next))
                    .unwrap_or_default(),
            })
        })
        .await
    }

    async fn set_roles(&self, request: Request<SetRolesRequest>) -> Result<Response<User>, Status> {
        let message = request.get_ref();
        let target = describe(message.user.as_ref());
        self.admin("SetRoles", request.metadata(), &target, async {
            let which = user_ref(message.user.as_ref(), "user.")?;
            let roles = roles(&message.roles)?;
            Ok(user(self.accounts.set_roles(&which, &roles).await?))
        })
        .await
    }

    async fn set_password(
        &self,
        request: Request<SetPasswordRequest>,
    ) -> Result<Response<SetPasswordResponse>, Status> {
        let message = request.get_ref();
        let target = describe(message.user.as_ref());
        self.admin("SetPassword", request.metadata(), &target, async {
            let which = user_ref(message.user.as_ref(), "user.")?;
            let password = Password::parse(message.password.clone())?;
            self.accounts.change_password(&which, &password).await?;
            Ok(SetPasswordResponse {})
        })
        .await
    }

    async fn disable_user(
        &self,
        request: Request<admin_pb::UserRef>,
    ) -> Result<Response<User>, Status> {
        let target = describe(Some(request.get_ref()));
        self.admin("DisableUser", request.metadata(), &target, async {
            let which = user_ref(Some(request.get_ref()), "")?;
            Ok(user(self.accounts.disable(&which).await?))
        })
        .await
    }

    async fn enable_user(
        &self,
        request: Request<admin_pb::UserRef>,
    ) -> Result<Response<User>, Status> {
        let target = describe(Some(request.get_ref()));
        self.admin("EnableUser", request.metadata(), &target, async {
            let which = user_ref(Some(request.get_ref()), "")?;
            Ok(user(self.accounts.enable(&which).await?))
        })
        .await
    }

    async fn delete_user(
        &self,
        request: Request<admin_pb::UserRef>,
    ) -> Result<Response<DeleteUserResponse>, Status> {
        let target = describe(Some(request.get_ref()));
        self.admin("DeleteUser", request.metadata(), &target, async {
            let which = user_ref(Some(request.get_ref()), "")?;
            self.accounts.delete(&which).await?;
            Ok(DeleteUserResponse {})
        })
        .await
    }

    async fn list_user_sessions(
        &self,
        request: Request<admin_pb::UserRef>,
    ) -> Result<Response<ListSessionsResponse>, Status> {
        let target = describe(Some(request.get_ref()));
        self.admin("ListUserSessions", request.metadata(), &target, async {
            let which = user_ref(Some(request.get_ref()), "")?;
            let sessions = self.accounts.sessions(&which).await?;
            Ok(ListSessionsResponse {
                sessions: sessions
                    .into_iter()
                    .map(|listed| {
                        session(UserSession {
                            session: listed,
                            current: false,
                        })
                    })
                    .collect(),
            })
        })
        .await
    }

    async fn revoke_user_sessions(
        &self,
        request: Request<admin_pb::UserRef>,
    ) -> Result<Response<RevokeUserSessionsResponse>, Status> {
        let target = describe(Some(request.get_ref()));
        self.admin("RevokeUserSessions", request.metadata(), &target, async {
            let which = user_ref(Some(request.get_ref()), "")?;
            self.accounts.logout_everywhere(&which).await?;
            Ok(RevokeUserSessionsResponse {})
        })
        .await
    }
}

/// The user a request names, its fields' names prefixed by `path` in an
/// error (`user.` inside SetRolesRequest).
fn user_ref(message: Option<&admin_pb::UserRef>, path: &str) -> Result<UserRef, Status> {
    let named = |field: &str, problem: String| invalid(&format!("{path}{field}"), &problem);
    match message.and_then(|message| message.user.as_ref()) {
        Some(user_ref::User::UserId(id)) => UserId::parse(id)
            .map(UserRef::Id)
            .map_err(|err| named("user_id", err.problem)),
        Some(user_ref::User::Username(name)) => Username::parse(name.clone())
            .map(UserRef::Name)
            .map_err(|err| named("username", err.problem)),
        None => Err(invalid("user", "must name a user by user_id or username")),
    }
}

/// The user a request names as the log shows it, before it is checked.
fn describe(message: Option<&admin_pb::UserRef>) -> String {
    match message.and_then(|message| message.user.as_ref()) {
        Some(user_ref::User::UserId(id)) => format!("with id {id:?}"),
        Some(user_ref::User::Username(name)) => format!("named {name:?}"),
        None => "-".to_owned(),
    }
}

fn roles(raw: &[String]) -> Result<Vec<Role>, Status> {
    raw.iter()
        .map(|role| Role::parse(role.clone()).map_err(|err| invalid("roles", &err.problem)))
        .collect()
}

/// INVALID_ARGUMENT naming `field` in a `google.rpc.BadRequest`.
fn invalid(field: &str, problem: &str) -> Status {
    bad_request(field, &format!("{field} {problem}"))
}

fn user(record: UserRecord) -> User {
    User {
        user_id: record.id.to_string(),
        username: record.username.as_str().to_owned(),
        roles: record
            .roles
            .iter()
            .map(|role| role.as_str().to_owned())
            .collect(),
        disabled: record.disabled_at.is_some(),
        created_at: Some(instant(record.created_at)),
        updated_at: Some(instant(record.updated_at)),
    }
}

/// Seals ListUsers' cursors into page tokens and opens them again: a token
/// this service did not make for ListUsers, or one altered, is refused.
#[derive(Clone)]
pub struct PageTokenKey(hmac::Key);

impl std::fmt::Debug for PageTokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PageTokenKey([REDACTED])")
    }
}

/// The first byte of a page token: its format.
const PAGE_TOKEN_FORMAT: u8 = 1;
/// What a ListUsers page token's tag covers before the cursor, so that a
/// token made for another listing never opens here.
const LIST_USERS_CONTEXT: &[u8] = b"auth.admin.v1.AdminService/ListUsers\0";
/// The longest page token taken, in bytes of base64.
const MAX_PAGE_TOKEN_BYTES: usize = 2048;

impl PageTokenKey {
    /// Tokens authenticated with `key` (one every instance on the
    /// database shares).
    pub fn new(key: hmac::Key) -> Self {
        Self(key)
    }

    fn tag(&self, cursor: &[u8]) -> hmac::Tag {
        let mut context = hmac::Context::with_key(&self.0);
        context.update(LIST_USERS_CONTEXT);
        context.update(cursor);
        context.sign()
    }

    /// The page token of `cursor`.
    fn seal(&self, cursor: &str) -> String {
        let tag = self.tag(cursor.as_bytes());
        let mut bytes = Vec::with_capacity(1 + tag.as_ref().len() + cursor.len());
        bytes.push(PAGE_TOKEN_FORMAT);
        bytes.extend_from_slice(tag.as_ref());
        bytes.extend_from_slice(cursor.as_bytes());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The cursor in `token`.
    fn open(&self, token: &str) -> Result<String, Status> {
        let refused = || invalid("page_token", "was not returned by ListUsers");
        if token.len() > MAX_PAGE_TOKEN_BYTES {
            return Err(refused());
        }
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| refused())?;
        let tag_len = hmac::HMAC_SHA256.digest_algorithm().output_len();
        let Some((&PAGE_TOKEN_FORMAT, rest)) = bytes.split_first() else {
            return Err(refused());
        };
        if rest.len() < tag_len {
            return Err(refused());
        }
        let (tag, cursor) = rest.split_at(tag_len);
        let mut message = Vec::with_capacity(LIST_USERS_CONTEXT.len() + cursor.len());
        message.extend_from_slice(LIST_USERS_CONTEXT);
        message.extend_from_slice(cursor);
        hmac::verify(&self.0, &message, tag).map_err(|_| refused())?;
        String::from_utf8(cursor.to_vec()).map_err(|_| refused())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> PageTokenKey {
        PageTokenKey::new(hmac::Key::new(hmac::HMAC_SHA256, &[byte; 32]))
    }

    #[test]
    fn a_page_token_opens_to_its_cursor() {
        let token = key(1).seal("élodie");
        assert_eq!(key(1).open(&token).unwrap(), "élodie");
    }

    #[test]
    fn altered_foreign_and_garbage_tokens_are_refused() {
        let token = key(1).seal("alice");
        let mut bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        let altered = URL_SAFE_NO_PAD.encode(&bytes);
        for bad in [
            altered.as_str(),
            &key(2).seal("alice"),
            "not base64!",
            "",
            "AQ",
            &"A".repeat(MAX_PAGE_TOKEN_BYTES + 1),
        ] {
            let status = key(1).open(bad).unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument, "{bad}");
        }
    }
}
