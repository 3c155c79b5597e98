//! Sign-In with Ethereum end to end: a wallet key made in the test signs the platform's
//! EIP-4361 challenge as `personal_sign` does (EIP-191), and the edge signs its owner in; a
//! message for another site, an expired one, a replayed nonce, another key's signature and a
//! malformed address are refused with the error envelope.

mod common;
mod edge_support;

use edge_support::Platform;
use k256::ecdsa::SigningKey;
use serde_json::{Value, json};
use sha3::{Digest, Keccak256};

/// The private key and address of web3.js's documentation example, so the address is not
/// derived by the code under test.
const KEY: &str = "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318";
const ADDRESS: &str = "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23";

fn key(hex_key: &str) -> SigningKey {
    SigningKey::from_slice(&hex::decode(hex_key).expect("hex")).expect("key")
}

/// `personal_sign`: the EIP-191 digest of `message`, signed, as 65 bytes hex with v = 27/28.
fn sign(key: &SigningKey, message: &str) -> String {
    let prefixed = format!("\x19Ethereum Signed Message:\n{}{message}", message.len());
    let digest = Keccak256::digest(prefixed.as_bytes());
    let (signature, recovery) = key.sign_prehash_recoverable(&digest).expect("sign");
    let mut bytes = signature.to_bytes().to_vec();
    bytes.push(27 + recovery.to_byte());
    format!("0x{}", hex::encode(bytes))
}

async fn challenge(platform: &Platform, address: &str) -> String {
    let answer = platform
        .post(
            "/api/v1/auth/wallet/challenge",
            None,
            json!({ "address": address }),
        )
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    answer.body["message"].as_str().expect("message").to_owned()
}

async fn verify(platform: &Platform, message: &str, signature: &str) -> (u16, Value) {
    let answer = platform
        .post(
            "/api/v1/auth/wallet/verify",
            None,
            json!({ "message": message, "signature": signature }),
        )
        .await;
    (answer.status, answer.body)
}

/// The signed-in `token`'s account links the wallet of `key` (a fresh challenge, signed).
async fn link(platform: &Platform, token: &str, key: &SigningKey) -> edge_support::Answer {
    let message = challenge(platform, ADDRESS).await;
    platform
        .post(
            "/api/v1/users/me/connections/wallet",
            Some(token),
            json!({ "message": message, "signature": sign(key, &message) }),
        )
        .await
}

/// The error code `message` signed by `key` is refused with (401).
async fn refusal(platform: &Platform, message: &str, key: &SigningKey) -> String {
    let (status, body) = verify(platform, message, &sign(key, message)).await;
    assert_eq!(status, 401, "{body}");
    body["error"]["code"].as_str().expect("a code").to_owned()
}

#[tokio::test]
async fn a_wallet_signs_in_to_the_same_account_each_time_and_forgeries_are_refused() {
    let platform = Platform::start(&[("WARREN_APPROVAL", "open")]).await;
    let wallet = key(KEY);
    let offered = platform.get("/api/v1/auth/providers", None).await;
    assert_eq!(
        offered.body["providers"],
        json!(["email", "wallet"]),
        "{offered:?}"
    );

    // The challenge names this platform, the checksummed address and a nonce.
    let message = challenge(&platform, &ADDRESS.to_ascii_lowercase()).await;
    assert!(message.starts_with("console.test wants you to sign in with your Ethereum account:\n"));
    assert!(message.contains(&format!("\n{ADDRESS}\n")), "{message}");
    assert!(message.contains("\nChain ID: 1\n"), "{message}");
    let (status, signed_in) = verify(&platform, &message, &sign(&wallet, &message)).await;
    assert_eq!(status, 200, "{signed_in}");
    let access = signed_in["access_token"].as_str().expect("access token");
    let me = platform.get("/api/v1/users/me", Some(access)).await;
    assert_eq!(me.status, 200, "{me:?}");
    let connections = platform
        .get("/api/v1/users/me/connections", Some(access))
        .await;
    assert_eq!(connections.body[0]["kind"], "wallet", "{connections:?}");
    assert_eq!(
        connections.body[0]["external_id"], ADDRESS,
        "{connections:?}"
    );

    // Replayed: the nonce is spent.
    assert_eq!(refusal(&platform, &message, &wallet).await, "siwe_nonce");

    // Again, with a new challenge: the same account.
    let again = challenge(&platform, ADDRESS).await;
    let (status, second) = verify(&platform, &again, &sign(&wallet, &again)).await;
    assert_eq!(status, 200, "{second}");
    let me_again = platform
        .get(
            "/api/v1/users/me",
            Some(second["access_token"].as_str().expect("token")),
        )
        .await;
    assert_eq!(me_again.body["id"], me.body["id"]);

    // Another site's message, signed by the right key.
    let other_site =
        challenge(&platform, ADDRESS)
            .await
            .replacen("console.test wants", "evil.test wants", 1);
    assert_eq!(
        refusal(&platform, &other_site, &wallet).await,
        "siwe_domain"
    );

    // An expired message.
    let fresh = challenge(&platform, ADDRESS).await;
    let expiry = fresh
        .lines()
        .find(|line| line.starts_with("Expiration Time: "))
        .expect("an expiry")
        .to_owned();
    let expired = fresh.replace(&expiry, "Expiration Time: 2020-01-01T00:00:00Z");
    assert_eq!(refusal(&platform, &expired, &wallet).await, "siwe_expired");

    // Signed by another key.
    let stolen = challenge(&platform, ADDRESS).await;
    let thief = key(&hex::encode(rand::random::<[u8; 32]>()));
    assert_eq!(
        refusal(&platform, &stolen, &thief).await,
        "invalid_signature"
    );
    // A nonce issued to this address does not sign another one in.
    let for_ada = challenge(&platform, ADDRESS).await;
    let thief_address = {
        let point = thief.verifying_key().to_encoded_point(false);
        let hash = Keccak256::digest(&point.as_bytes()[1..]);
        format!("0x{}", hex::encode(&hash[12..]))
    };
    let swapped = for_ada.replace(ADDRESS, &thief_address);
    assert_eq!(refusal(&platform, &swapped, &thief).await, "siwe_address");

    // Malformed input: clear refusals, never a 5xx.
    for address in [
        "0x123",
        "2c7536E3605D9C16a7a3D7b1898e529396a65c23",
        "0x2c7536e3605D9C16a7a3D7b1898e529396a65c23",
    ] {
        let answer = platform
            .post(
                "/api/v1/auth/wallet/challenge",
                None,
                json!({ "address": address }),
            )
            .await;
        assert_eq!(answer.status, 422, "{address}: {answer:?}");
    }
    let (status, body) = verify(&platform, "not a siwe message", "0x00").await;
    assert_eq!(status, 422, "{body}");
    let fresh = challenge(&platform, ADDRESS).await;
    let (status, body) = verify(&platform, &fresh, "0xnothex").await;
    assert_eq!(status, 422, "{body}");
}

#[tokio::test]
async fn a_wallet_links_to_an_email_account_signs_in_to_it_and_cannot_be_taken_by_another() {
    let platform = Platform::start(&[("WARREN_APPROVAL", "open")]).await;
    let wallet = key(KEY);
    let ada = platform.sign_in("ada@example.com").await;
    let bob = platform.sign_in("bob@example.com").await;

    // Ada links the wallet: it is listed, and signs in to her account.
    let linked = link(&platform, &ada.access, &wallet).await;
    assert_eq!(linked.status, 200, "{linked:?}");
    let kinds: Vec<&str> = linked
        .body
        .as_array()
        .expect("connections")
        .iter()
        .filter_map(|c| c["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["email", "wallet"]);
    let message = challenge(&platform, ADDRESS).await;
    let (status, by_wallet) = verify(&platform, &message, &sign(&wallet, &message)).await;
    assert_eq!(status, 200, "{by_wallet}");
    let me = |token: String| {
        let platform = &platform;
        async move { platform.get("/api/v1/users/me", Some(&token)).await.body["id"].clone() }
    };
    let wallet_user = me(by_wallet["access_token"]
        .as_str()
        .expect("token")
        .to_owned())
    .await;
    assert_eq!(
        wallet_user,
        me(ada.access.clone()).await,
        "the wallet signs Ada in"
    );

    // Bob cannot take it.
    let stolen = link(&platform, &bob.access, &wallet).await;
    assert_eq!(stolen.status, 409, "{stolen:?}");
    assert_eq!(stolen.body["error"]["code"], "identity_taken");

    // Ada unlinks it: it then signs in nobody of hers (a new account instead), and her last
    // method cannot go.
    let wallet_connection = linked.body.as_array().expect("connections")[1]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let unlinked = platform
        .delete(
            &format!("/api/v1/users/me/connections/{wallet_connection}"),
            Some(&ada.access),
        )
        .await;
    assert_eq!(unlinked.status, 204, "{unlinked:?}");
    let message = challenge(&platform, ADDRESS).await;
    let (status, fresh) = verify(&platform, &message, &sign(&wallet, &message)).await;
    assert_eq!(status, 200, "{fresh}");
    let fresh_user = me(fresh["access_token"].as_str().expect("token").to_owned()).await;
    assert_ne!(fresh_user, me(ada.access.clone()).await);
    let email_connection = platform
        .get("/api/v1/users/me/connections", Some(&ada.access))
        .await
        .body[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let last = platform
        .delete(
            &format!("/api/v1/users/me/connections/{email_connection}"),
            Some(&ada.access),
        )
        .await;
    assert_eq!(last.status, 409, "{last:?}");
}
