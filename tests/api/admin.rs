//! AdminService: who may call it, what each call does to a user and its
//! tokens, the errors, and ListUsers' pages.

use authd::grpc::{
    admin_pb::{
        CreateUserRequest, ListUsersRequest, SetPasswordRequest, SetRolesRequest, User, UserRef,
        admin_service_client::AdminServiceClient, user_ref,
    },
    pb::TokenInvalidReason,
};
use tonic::{Code, Status, transport::Channel};
use tonic_types::StatusExt as _;

use crate::helpers::{Backend, DbProxy, TestApp, World, bearer, on_both_backends};

const PASSWORD: &str = "correct horse battery";

/// Adds `root` with the admin role and returns its access token.
async fn admin_token(world: &mut World) -> String {
    world.add_user("root", PASSWORD, &["authd:admin"]).await;
    world
        .app
        .login("root", PASSWORD)
        .await
        .unwrap()
        .access_token
}

fn by_name(name: &str) -> UserRef {
    UserRef {
        user: Some(user_ref::User::Username(name.to_owned())),
    }
}

fn by_id(id: &str) -> UserRef {
    UserRef {
        user: Some(user_ref::User::UserId(id.to_owned())),
    }
}

fn roles(names: &[&str]) -> Vec<String> {
    names.iter().map(|name| (*name).to_owned()).collect()
}

async fn create(
    admin: &mut AdminServiceClient<Channel>,
    token: &str,
    name: &str,
    password: &str,
    with: &[&str],
) -> Result<User, Status> {
    admin
        .create_user(bearer(
            token,
            CreateUserRequest {
                username: name.to_owned(),
                password: password.to_owned(),
                roles: roles(with),
            },
        ))
        .await
        .map(tonic::Response::into_inner)
}

/// The field a `google.rpc.BadRequest` names, asserting the code.
fn bad_field(status: &Status) -> String {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let details = status.get_error_details();
    let request = details.bad_request().expect("a BadRequest detail");
    request.field_violations[0].field.clone()
}

async fn admin_calls_need_a_valid_token_with_the_admin_role(backend: Backend) {
    let mut world = World::new(backend).await;
    let root = admin_token(&mut world).await;
    world.add_user("alice", PASSWORD, &["reader"]).await;
    let alice = world.app.login("alice", PASSWORD).await.unwrap();
    let admin = &mut world.app.admin;

    let anonymous = admin
        .get_user(tonic::Request::new(by_name("alice")))
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    let forged = admin
        .get_user(bearer("not.a.token", by_name("alice")))
        .await
        .unwrap_err();
    assert_eq!(forged.code(), Code::Unauthenticated);
    let without_role = admin
        .get_user(bearer(&alice.access_token, by_name("alice")))
        .await
        .unwrap_err();
    assert_eq!(without_role.code(), Code::PermissionDenied);
    assert!(
        without_role.message().contains("authd:admin"),
        "{without_role:?}"
    );
    // Refusals come before the request is looked at.
    let unchecked = admin
        .get_user(bearer(&alice.access_token, UserRef { user: None }))
        .await
        .unwrap_err();
    assert_eq!(unchecked.code(), Code::PermissionDenied);

    let user = admin
        .get_user(bearer(&root, by_name("ALICE")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(user.username, "alice");
    assert_eq!(user.roles, ["reader"]);

    world.app.logout(&root).await.unwrap();
    let revoked = world
        .app
        .admin
        .get_user(bearer(&root, by_name("alice")))
        .await
        .unwrap_err();
    assert_eq!(revoked.code(), Code::Unauthenticated);
}

async fn the_admin_role_is_the_one_configured(backend: Backend) {
    let mut world = World::with(backend, |settings| {
        settings.admin_role = authd::domain::Role::parse("ops:users").unwrap();
    })
    .await;
    let default_role = admin_token(&mut world).await;
    world.add_user("ops", PASSWORD, &["ops:users"]).await;
    let ops = world.app.login("ops", PASSWORD).await.unwrap().access_token;
    let admin = &mut world.app.admin;
    let refused = admin
        .get_user(bearer(&default_role, by_name("ops")))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    admin.get_user(bearer(&ops, by_name("root"))).await.unwrap();
}

async fn users_are_created_changed_and_deleted_with_immediate_effect(backend: Backend) {
    let mut world = World::new(backend).await;
    let root = admin_token(&mut world).await;
    let admin = &mut world.app.admin.clone();

    let bob = create(
        admin,
        &root,
        "Bob",
        PASSWORD,
        &["reader", "writer", "reader"],
    )
    .await
    .unwrap();
    assert_eq!(bob.username, "Bob");
    assert_eq!(bob.roles, ["reader", "writer"], "each role once");
    assert!(!bob.disabled);
    assert_eq!(bob.created_at, bob.updated_at);
    let found = admin
        .get_user(bearer(&root, by_id(&bob.user_id)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found, bob);
    let taken = create(admin, &root, "BOB", PASSWORD, &[])
        .await
        .unwrap_err();
    assert_eq!(taken.code(), Code::AlreadyExists);

    let token = world.app.login("bob", PASSWORD).await.unwrap().access_token;
    assert!(world.app.validate(&token).await.valid);

    // Adding a role leaves the tokens be; taking one away revokes them.
    let more = admin
        .set_roles(bearer(
            &root,
            SetRolesRequest {
                user: Some(by_name("bob")),
                roles: roles(&["reader", "writer", "ops"]),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(more.roles, ["reader", "writer", "ops"]);
    assert!(world.app.validate(&token).await.valid);
    let fewer = admin
        .set_roles(bearer(
            &root,
            SetRolesRequest {
                user: Some(by_id(&bob.user_id)),
                roles: roles(&["reader"]),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fewer.roles, ["reader"]);
    // The instance that took the call answers from it at once.
    assert_eq!(
        world.app.validate(&token).await.reason(),
        TokenInvalidReason::Revoked
    );
    let token = world.app.login("bob", PASSWORD).await.unwrap();
    assert_eq!(
        world.app.validate(&token.access_token).await.roles,
        ["reader"]
    );

    let disabled = admin
        .disable_user(bearer(&root, by_name("bob")))
        .await
        .unwrap()
        .into_inner();
    assert!(disabled.disabled);
    assert_eq!(
        world.app.validate(&token.access_token).await.reason(),
        TokenInvalidReason::Revoked
    );
    let refused = world.app.login("bob", PASSWORD).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    let enabled = admin
        .enable_user(bearer(&root, by_name("bob")))
        .await
        .unwrap()
        .into_inner();
    assert!(!enabled.disabled);
    assert_eq!(
        world.app.validate(&token.access_token).await.reason(),
        TokenInvalidReason::Revoked,
        "enabling restores no token"
    );

    let token = world.app.login("bob", PASSWORD).await.unwrap().access_token;
    admin
        .set_password(bearer(
            &root,
            SetPasswordRequest {
                user: Some(by_name("bob")),
                password: "another long password".to_owned(),
            },
        ))
        .await
        .unwrap();
    assert_eq!(
        world.app.validate(&token).await.reason(),
        TokenInvalidReason::Revoked
    );
    assert!(world.app.login("bob", PASSWORD).await.is_err());
    let token = world
        .app
        .login("bob", "another long password")
        .await
        .unwrap()
        .access_token;

    let sessions = admin
        .list_user_sessions(bearer(&root, by_name("bob")))
        .await
        .unwrap()
        .into_inner()
        .sessions;
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert!(!sessions[0].current);
    admin
        .revoke_user_sessions(bearer(&root, by_name("bob")))
        .await
        .unwrap();
    assert_eq!(
        world.app.validate(&token).await.reason(),
        TokenInvalidReason::Revoked
    );
    let sessions = admin
        .list_user_sessions(bearer(&root, by_name("bob")))
        .await
        .unwrap()
        .into_inner()
        .sessions;
    assert!(sessions.is_empty());

    let token = world
        .app
        .login("bob", "another long password")
        .await
        .unwrap()
        .access_token;
    admin
        .delete_user(bearer(&root, by_id(&bob.user_id)))
        .await
        .unwrap();
    assert_eq!(
        world.app.validate(&token).await.reason(),
        TokenInvalidReason::Revoked
    );
    for gone in [
        admin
            .get_user(bearer(&root, by_name("bob")))
            .await
            .map(drop),
        admin
            .delete_user(bearer(&root, by_id(&bob.user_id)))
            .await
            .map(drop),
        admin
            .revoke_user_sessions(bearer(&root, by_name("bob")))
            .await
            .map(drop),
    ] {
        assert_eq!(gone.unwrap_err().code(), Code::NotFound);
    }
    // The name is free again, for a new user with a new id.
    let again = create(admin, &root, "bob", PASSWORD, &[]).await.unwrap();
    assert_ne!(again.user_id, bob.user_id);
}

async fn bad_requests_name_the_field(backend: Backend) {
    let mut world = World::new(backend).await;
    let root = admin_token(&mut world).await;
    let admin = &mut world.app.admin.clone();

    let cases = [
        (create(admin, &root, "", PASSWORD, &[]).await, "username"),
        (
            create(admin, &root, "carol", "seven77", &[]).await,
            "password",
        ),
        (create(admin, &root, "carol", "", &[]).await, "password"),
        (
            create(admin, &root, "carol", PASSWORD, &["has space"]).await,
            "roles",
        ),
        (
            admin
                .get_user(bearer(&root, UserRef { user: None }))
                .await
                .map(tonic::Response::into_inner),
            "user",
        ),
        (
            admin
                .get_user(bearer(&root, by_id("not-a-uuid")))
                .await
                .map(tonic::Response::into_inner),
            "user_id",
        ),
        (
            admin
                .set_roles(bearer(
                    &root,
                    SetRolesRequest {
                        user: Some(by_name("")),
                        roles: Vec::new(),
                    },
                ))
                .await
                .map(tonic::Response::into_inner),
            "user.username",
        ),
    ];
    for (result, field) in cases {
        assert_eq!(bad_field(&result.unwrap_err()), field);
    }
    let short = admin
        .set_password(bearer(
            &root,
            SetPasswordRequest {
                user: Some(by_name("root")),
                password: "short".to_owned(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(bad_field(&short), "password");
    let unknown = admin
        .get_user(bearer(&root, by_id(&uuid::Uuid::new_v4().to_string())))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
}

async fn list_page(
    app: &mut TestApp,
    token: &str,
    page_size: i32,
    page_token: &str,
) -> Result<(Vec<String>, String), Status> {
    let page = app
        .admin
        .list_users(bearer(
            token,
            ListUsersRequest {
                page_size,
                page_token: page_token.to_owned(),
            },
        ))
        .await?
        .into_inner();
    Ok((
        page.users.into_iter().map(|user| user.username).collect(),
        page.next_page_token,
    ))
}

async fn users_are_listed_in_pages_of_a_stable_order(backend: Backend) {
    let mut world = World::new(backend).await;
    let root = admin_token(&mut world).await;
    for name in ["dave", "Bob", "alice", "Élodie", "carol", "frank", "erin"] {
        world.add_user(name, PASSWORD, &[]).await;
    }

    let (all, last) = list_page(&mut world.app, &root, 0, "").await.unwrap();
    assert_eq!(
        all,
        [
            "alice", "Bob", "carol", "dave", "erin", "frank", "root", "Élodie"
        ]
    );
    assert!(last.is_empty(), "one page holds them all");

    // Pages of three, the second asked of another instance on the database.
    let mut other = world.second_app().await;
    let (first, next) = list_page(&mut world.app, &root, 3, "").await.unwrap();
    assert_eq!(first, ["alice", "Bob", "carol"]);
    let (second, next) = list_page(&mut other, &root, 3, &next).await.unwrap();
    assert_eq!(second, ["dave", "erin", "frank"]);
    let (third, end) = list_page(&mut world.app, &root, 3, &next).await.unwrap();
    assert_eq!(third, ["root", "Élodie"]);
    assert!(end.is_empty());

    // A user added before the page asked for shows in its place.
    world.add_user("Dan", PASSWORD, &[]).await;
    let (_, next) = list_page(&mut world.app, &root, 3, "").await.unwrap();
    let (second, _) = list_page(&mut world.app, &root, 3, &next).await.unwrap();
    assert_eq!(second, ["Dan", "dave", "erin"]);

    let mut tampered = next.clone().into_bytes();
    let last = tampered.len() - 1;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let mut elsewhere = World::new(backend).await;
    let foreign_root = admin_token(&mut elsewhere).await;
    elsewhere.add_user("zed", PASSWORD, &[]).await;
    let (_, foreign) = list_page(&mut elsewhere.app, &foreign_root, 1, "")
        .await
        .unwrap();
    assert!(!foreign.is_empty());
    for bad in [tampered.as_str(), foreign.as_str(), "garbage!", "AAAA"] {
        let refused = list_page(&mut world.app, &root, 3, bad).await.unwrap_err();
        assert_eq!(bad_field(&refused), "page_token", "{bad}");
    }
    let negative = list_page(&mut world.app, &root, -1, "").await.unwrap_err();
    assert_eq!(bad_field(&negative), "page_size");
    let (capped, _) = list_page(&mut world.app, &root, 100_000, "").await.unwrap();
    assert_eq!(capped.len(), 9);
}

#[tokio::test]
async fn without_its_database_an_admin_call_is_unavailable() {
    let proxy = DbProxy::start().await;
    let mut world = World::behind(&proxy).await;
    let root = admin_token(&mut world).await;
    let admin = &mut world.app.admin.clone();
    admin
        .get_user(bearer(&root, by_name("root")))
        .await
        .unwrap();

    proxy.cut();
    for refused in [
        admin
            .get_user(bearer(&root, by_name("root")))
            .await
            .map(drop),
        create(admin, &root, "carol", PASSWORD, &[]).await.map(drop),
    ] {
        assert_eq!(refused.unwrap_err().code(), Code::Unavailable);
    }
    proxy.restore();
    // Back once the revocation state has caught up (it may have gone
    // stale meanwhile, and answers UNAVAILABLE until then).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while let Err(status) = admin.get_user(bearer(&root, by_name("root"))).await {
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(std::time::Instant::now() < deadline, "never back");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        admin
            .get_user(bearer(&root, by_name("carol")))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound,
        "nothing was half made"
    );
}

on_both_backends!(
    admin_calls_need_a_valid_token_with_the_admin_role,
    the_admin_role_is_the_one_configured,
    users_are_created_changed_and_deleted_with_immediate_effect,
    bad_requests_name_the_field,
    users_are_listed_in_pages_of_a_stable_order,
);
