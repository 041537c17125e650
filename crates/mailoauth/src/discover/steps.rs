//! How to get a client id, filled in with an account's values: the step every
//! set-up stumbles on (docs/client-id-*.md hold the long form).
//!
//! Owns: the provider's registration steps as text (printed by `add` and
//! `doctor`). Must not: look anything up; it words what the decision holds.

use crate::config::{Cloud, ProviderKind};

use super::Decision;

/// The portal of a Microsoft cloud, where apps are registered.
fn portal(cloud: Cloud) -> &'static str {
    match cloud {
        Cloud::Global => "https://entra.microsoft.com",
        Cloud::Usgov | Cloud::UsgovDod => "https://portal.azure.us",
        Cloud::China => "https://portal.azure.cn",
    }
}

/// How to get a client id for this account, filled in with its values.
pub fn registration_steps(
    provider: ProviderKind,
    d: &Decision,
    name: &str,
    client_id: Option<&str>,
) -> String {
    let id = client_id.unwrap_or("<application (client) id>");
    match provider {
        ProviderKind::Microsoft => {
            let cloud = d.cloud.unwrap_or_default();
            let tenant = d.tenant.as_deref().unwrap_or("organizations");
            let login = match cloud {
                Cloud::Global => "https://login.microsoftonline.com",
                Cloud::Usgov | Cloud::UsgovDod => "https://login.microsoftonline.us",
                Cloud::China => "https://login.partner.microsoftonline.cn",
            };
            format!(
                "\nNo client id yet. Register an app for {email} (docs/client-id-microsoft.md):\n\
                 1. {portal} → App registrations → New registration (tenant {tenant}).\n\
                 2. Authentication → Add a platform → \"Mobile and desktop applications\" → redirect URI\n\
                 \x20  http://localhost (mailoauth listens on a free port; the port is not part of the match).\n\
                 3. Authentication → \"Allow public client flows\" → Yes (for the device code flow).\n\
                 4. API permissions → Add → Microsoft Graph → Delegated: IMAP.AccessAsUser.All,\n\
                 \x20  POP.AccessAsUser.All, SMTP.Send, offline_access. (They are listed under Microsoft Graph,\n\
                 \x20  yet the tokens are for the mail resource; mailoauth asks for the right one.)\n\
                 5. If users may not consent themselves, an administrator opens\n\
                 \x20  {login}/{tenant}/adminconsent?client_id={id}\n\
                 The same with the Azure CLI (az login --tenant {tenant}):\n\
                 \x20  az ad app create --display-name mailoauth --public-client-redirect-uris http://localhost \\\n\
                 \x20    --is-fallback-public-client true --query appId -o tsv\n\
                 \x20  then add the permissions (ids looked up, not guessed):\n\
                 \x20  for p in IMAP.AccessAsUser.All POP.AccessAsUser.All SMTP.Send offline_access; do\n\
                 \x20    az ad app permission add --id {id} --api 00000003-0000-0000-c000-000000000000 \\\n\
                 \x20      --api-permissions \"$(az ad sp show --id 00000003-0000-0000-c000-000000000000 \\\n\
                 \x20      --query \"oauth2PermissionScopes[?value=='$p'].id\" -o tsv)=Scope\"; done\n\
                 Then: mailoauth add {name} --client-id {id}\n",
                email = d.email,
                portal = portal(cloud),
            )
        }
        ProviderKind::Google => format!(
            "\nNo client id yet. Create a Google OAuth client for {email} (docs/client-id-google.md):\n\
             1. https://console.cloud.google.com → create (or pick) a project.\n\
             2. Google Auth Platform / OAuth consent screen: user type Internal (Workspace) or External;\n\
             \x20  add the scope https://mail.google.com/. External apps in \"Testing\" get refresh tokens\n\
             \x20  that expire after 7 days: publish the app (or re-login weekly).\n\
             3. Clients → Create client → application type \"Desktop app\"; note the client id and secret.\n\
             Then: mailoauth add {name} --client-id <id> --client-secret-command 'pass show google/mailoauth'\n",
            email = d.email,
        ),
        _ => format!(
            "\nNo client id yet. Ask the administrator of {domain}'s authorization server for an OAuth 2.0\n\
             client (public, PKCE, redirect URI http://127.0.0.1/ on any port) — docs/client-id-generic.md.\n\
             Then: mailoauth add {name} --client-id <id>\n",
            domain = d.domain,
        ),
    }
}
