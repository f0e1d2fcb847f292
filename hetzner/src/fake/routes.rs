//! Hetzner's paths: servers, actions, server types, locations, SSH keys.

#[allow(clippy::wildcard_imports)]
use super::*;

pub(super) async fn list_servers(
    State(state): State<FakeState>,
    OriginalUri(uri): OriginalUri,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    if let Some(response) = injected(&state, "list_servers") {
        return Ok(response);
    }
    let query = parse_list_query(&pairs)?;
    let inner = state.lock();
    let items: Vec<Value> = inner
        .servers
        .values()
        .filter(|server| query.name.as_ref().is_none_or(|name| &server.name == name))
        .filter(|server| query.label_selector.as_ref().is_none_or(|s| s.matches(&server.labels)))
        .map(|server| inner.server_json(server))
        .filter(|json| query.status.is_empty() || query.status.iter().any(|status| json["status"] == status.as_str()))
        .collect();
    let (servers, meta) = paginate(items, &query);
    Ok(list_response(&uri, "servers", servers, meta))
}

pub(super) async fn get_server(State(state): State<FakeState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    if let Some(response) = injected(&state, "get_server") {
        return Ok(response);
    }
    let id = parse_id(&id, "server")?;
    let inner = state.lock();
    let server = inner.servers.get(&id).ok_or_else(|| ApiError::not_found("server"))?;
    Ok(axum::Json(json!({ "server": inner.server_json(server) })).into_response())
}

pub(super) async fn delete_server(
    State(state): State<FakeState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if let Some(response) = injected(&state, "delete_server") {
        return Ok(response);
    }
    let id = parse_id(&id, "server")?;
    let mut inner = state.lock();
    if inner.servers.remove(&id).is_none() {
        return Err(ApiError::not_found("server"));
    }
    inner.stats.servers_deleted += 1;
    let action = inner.new_action("delete_server", vec![(id, "server")]);
    Ok(axum::Json(json!({ "action": inner.action_json(&action) })).into_response())
}

pub(super) async fn get_action(State(state): State<FakeState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    if let Some(response) = injected(&state, "get_action") {
        return Ok(response);
    }
    let id = parse_id(&id, "action")?;
    let inner = state.lock();
    let action = inner.actions.get(&id).ok_or_else(|| ApiError::not_found("action"))?;
    Ok(axum::Json(json!({ "action": inner.action_json(action) })).into_response())
}

/// `GET /actions?id=1&id=2`: the actions with these ids (unknown ids are left out).
pub(super) async fn get_actions(
    State(state): State<FakeState>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    if let Some(response) = injected(&state, "get_actions") {
        return Ok(response);
    }
    let mut ids = Vec::new();
    for (key, value) in &pairs {
        if key == "id" {
            ids.push(parse_id(value, "action")?);
        }
    }
    if ids.is_empty() {
        return Err(ApiError::invalid_field("id", "at least one action id is required"));
    }
    let inner = state.lock();
    let actions: Vec<Value> = ids
        .iter()
        .filter_map(|id| inner.actions.get(id))
        .map(|action| inner.action_json(action))
        .collect();
    Ok(axum::Json(json!({ "actions": actions })).into_response())
}

pub(super) async fn create_server(State(state): State<FakeState>, body: Bytes) -> Result<Response, ApiError> {
    state.lock().stats.create_requests += 1;
    if let Some(response) = injected(&state, "create_server") {
        return Ok(response);
    }
    let body = parse_json_body(&body)?;
    let name = string_field(&body, "name", true)?.unwrap_or_default().to_owned();
    if !valid_hostname(&name) {
        return Err(ApiError::invalid_field("name", "must be a valid hostname (RFC 1123)"));
    }
    let server_type_text = string_field(&body, "server_type", true)?.unwrap_or_default();
    string_field(&body, "image", true)?;
    let location_text = string_field(&body, "location", false)?;
    let labels = parse_labels(&body)?;
    let start_after_create = match body.get("start_after_create") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(start)) => *start,
        Some(_) => return Err(ApiError::invalid_field("start_after_create", "must be a boolean")),
    };
    let user_data = string_field(&body, "user_data", false)?.unwrap_or_default().to_owned();
    if user_data.len() > USER_DATA_BYTES_MAX {
        return Err(ApiError::invalid_field("user_data", "is limited to 32KiB"));
    }
    let ssh_key_refs: Vec<String> = match body.get("ssh_keys") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(text) => Ok(text.clone()),
                Value::Number(number) => Ok(number.to_string()),
                _ => Err(ApiError::invalid_field("ssh_keys", "must be IDs or names")),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(ApiError::invalid_field("ssh_keys", "must be an array")),
    };

    let mut inner = state.lock();
    let server_type = find_index(&inner.config.server_types, server_type_text, |t| t.name.as_str())
        .ok_or_else(|| ApiError::invalid_field("server_type", format!("server type {server_type_text:?} not found")))?;
    let offered: Vec<String> = inner.config.server_types[server_type]
        .prices
        .iter()
        .map(|price| price.location.clone())
        .collect();
    if offered.is_empty() {
        return Err(ApiError::invalid_field(
            "server_type",
            format!("server type {server_type_text:?} is not offered in any location"),
        ));
    }
    let location = match location_text {
        Some(text) => find_index(&inner.config.locations, text, |l| l.name.as_str())
            .ok_or_else(|| ApiError::invalid_field("location", format!("location {text:?} not found")))?,
        None => {
            let type_name = inner.config.server_types[server_type].name.clone();
            let first = offered
                .iter()
                .find(|l| !inner.sold_out(&type_name, l))
                .unwrap_or(&offered[0])
                .clone();
            inner.config.locations.iter().position(|l| l.name == first).unwrap_or(0)
        }
    };
    let type_name = inner.config.server_types[server_type].name.clone();
    let location_name = inner.config.locations[location].name.clone();
    if !offered.contains(&location_name) {
        return Err(ApiError::invalid_field(
            "location",
            format!("server type {type_name} is not offered in location {location_name}"),
        ));
    }
    let mut ssh_keys = Vec::new();
    for reference in &ssh_key_refs {
        let key = inner
            .ssh_keys
            .values()
            .find(|key| &key.name == reference || key.id.to_string() == *reference)
            .ok_or_else(|| ApiError::invalid_field("ssh_keys", format!("SSH key {reference:?} not found")))?;
        ssh_keys.push(key.id);
    }
    if inner.servers.values().any(|server| server.name == name) {
        return Err(ApiError {
            status: StatusCode::CONFLICT,
            code: "uniqueness_error",
            message: "server name is already used".to_owned(),
            details: json!({ "fields": [{ "name": "name" }] }),
        });
    }
    if inner.sold_out(&type_name, &location_name) {
        return Err(ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "resource_unavailable",
            format!("server type {type_name} is currently unavailable in location {location_name}"),
        ));
    }
    if let Some(limit) = inner.config.server_limit
        && inner.servers.len() as u64 >= limit
    {
        return Err(ApiError {
            status: StatusCode::FORBIDDEN,
            code: "resource_limit_exceeded",
            message: format!("server limit of {limit} exceeded"),
            details: json!({ "limits": [{ "name": "server_limit" }] }),
        });
    }

    let id = inner.allocate_id();
    let endpoint = if inner.config.endpoints.is_empty() {
        EndpointConfig {
            ip: format!("192.0.2.{}", inner.vms_created % 254 + 1),
            ssh_port: 22,
            game_port_first: None,
            game_port_last: None,
        }
    } else {
        let index = (inner.vms_created % inner.config.endpoints.len() as u64) as usize;
        inner.config.endpoints[index].clone()
    };
    inner.vms_created += 1;
    // A host key in the user data and an sshd to run: the VM presents that key.
    let mut endpoint = endpoint;
    let host_key = crate::cloud_init::host_key_of_user_data(&user_data);
    let sshd = match (&inner.config.vm_sshd, host_key) {
        (Some(sshd), Some(host_key)) => {
            let sshd =
                super::vm_sshd::VmSshd::start(sshd, &endpoint.ip, id, &host_key).map_err(|message| ApiError {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    code: "server_error",
                    message: format!("the fake could not start the VM's sshd: {message}"),
                    details: json!({}),
                })?;
            endpoint.ssh_port = sshd.port;
            Some(Arc::new(sshd))
        }
        _ => None,
    };
    let mut labels = labels;
    if inner.config.hint_labels {
        labels.insert(HINT_LABEL_SSH_PORT.to_owned(), endpoint.ssh_port.to_string());
        if let (Some(first), Some(last)) = (endpoint.game_port_first, endpoint.game_port_last) {
            labels.insert(HINT_LABEL_GAME_PORTS.to_owned(), format!("{first}-{last}"));
        }
    }
    let create = inner.new_action("create_server", vec![(id, "server")]);
    let start = start_after_create.then(|| inner.new_action("start_server", vec![(id, "server")]));
    let created_unix_ms = inner.unix_ms(inner.now_ms());
    let server = FakeServer {
        id,
        name,
        server_type,
        location,
        labels,
        created_unix_ms,
        create_action: create.id,
        start_after_create,
        endpoint,
        user_data,
        ssh_keys: ssh_keys.clone(),
        _sshd: sshd,
    };
    let server_json = inner.server_json(&server);
    inner.servers.insert(id, server);
    inner.stats.servers_created += 1;
    let body = json!({
        "server": server_json,
        "action": inner.action_json(&create),
        "next_actions": start.iter().map(|action| inner.action_json(action)).collect::<Vec<_>>(),
        "root_password": if ssh_keys.is_empty() { Value::String("fake-root-password".to_owned()) } else { Value::Null },
    });
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}

pub(super) async fn list_server_types(
    State(state): State<FakeState>,
    OriginalUri(uri): OriginalUri,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    if let Some(response) = injected(&state, "list_server_types") {
        return Ok(response);
    }
    let query = parse_list_query(&pairs)?;
    let inner = state.lock();
    let items: Vec<Value> = (0..inner.config.server_types.len())
        .filter(|index| {
            query
                .name
                .as_ref()
                .is_none_or(|name| &inner.config.server_types[*index].name == name)
        })
        .map(|index| inner.server_type_json(index))
        .collect();
    let (server_types, meta) = paginate(items, &query);
    Ok(list_response(&uri, "server_types", server_types, meta))
}

pub(super) async fn get_server_type(
    State(state): State<FakeState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id, "server type")?;
    let inner = state.lock();
    if id == 0 || id as usize > inner.config.server_types.len() {
        return Err(ApiError::not_found("server type"));
    }
    Ok(axum::Json(json!({ "server_type": inner.server_type_json(id as usize - 1) })).into_response())
}

pub(super) async fn list_locations(
    State(state): State<FakeState>,
    OriginalUri(uri): OriginalUri,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    if let Some(response) = injected(&state, "list_locations") {
        return Ok(response);
    }
    let query = parse_list_query(&pairs)?;
    let inner = state.lock();
    let items: Vec<Value> = (0..inner.config.locations.len())
        .filter(|index| {
            query
                .name
                .as_ref()
                .is_none_or(|name| &inner.config.locations[*index].name == name)
        })
        .map(|index| inner.location_json(index))
        .collect();
    let (locations, meta) = paginate(items, &query);
    Ok(list_response(&uri, "locations", locations, meta))
}

pub(super) async fn get_location(State(state): State<FakeState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = parse_id(&id, "location")?;
    let inner = state.lock();
    if id == 0 || id as usize > inner.config.locations.len() {
        return Err(ApiError::not_found("location"));
    }
    Ok(axum::Json(json!({ "location": inner.location_json(id as usize - 1) })).into_response())
}

pub(super) async fn list_ssh_keys(
    State(state): State<FakeState>,
    OriginalUri(uri): OriginalUri,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    if let Some(response) = injected(&state, "list_ssh_keys") {
        return Ok(response);
    }
    let query = parse_list_query(&pairs)?;
    let fingerprint_filter = pairs.iter().find(|(k, _)| k == "fingerprint").map(|(_, v)| v.clone());
    let inner = state.lock();
    let items: Vec<Value> = inner
        .ssh_keys
        .values()
        .filter(|key| query.name.as_ref().is_none_or(|name| &key.name == name))
        .filter(|key| query.label_selector.as_ref().is_none_or(|s| s.matches(&key.labels)))
        .filter(|key| {
            fingerprint_filter
                .as_ref()
                .is_none_or(|f| &fingerprint(&key.public_key) == f)
        })
        .map(|key| inner.ssh_key_json(key))
        .collect();
    let (ssh_keys, meta) = paginate(items, &query);
    Ok(list_response(&uri, "ssh_keys", ssh_keys, meta))
}

pub(super) async fn create_ssh_key(State(state): State<FakeState>, body: Bytes) -> Result<Response, ApiError> {
    if let Some(response) = injected(&state, "create_ssh_key") {
        return Ok(response);
    }
    let body = parse_json_body(&body)?;
    let name = string_field(&body, "name", true)?.unwrap_or_default().to_owned();
    let public_key = string_field(&body, "public_key", true)?
        .unwrap_or_default()
        .trim()
        .to_owned();
    let mut parts = public_key.split_whitespace();
    let key_ok = parts
        .next()
        .is_some_and(|kind| kind.starts_with("ssh-") || kind.starts_with("ecdsa-"))
        && parts.next().is_some_and(|blob| !blob.is_empty());
    if !key_ok {
        return Err(ApiError::invalid_field("public_key", "is not a valid SSH public key"));
    }
    let labels = parse_labels(&body)?;
    let mut inner = state.lock();
    let body_of = |key: &str| key.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    if let Some(clash) = inner
        .ssh_keys
        .values()
        .find(|key| key.name == name || body_of(&key.public_key) == body_of(&public_key))
    {
        let field = if clash.name == name { "name" } else { "public_key" };
        return Err(ApiError {
            status: StatusCode::CONFLICT,
            code: "uniqueness_error",
            message: format!("SSH key with the same {field} already exists"),
            details: json!({ "fields": [{ "name": field }] }),
        });
    }
    let id = inner.allocate_id();
    let key = FakeSshKey {
        id,
        name,
        public_key,
        labels,
        created_unix_ms: inner.unix_ms(inner.now_ms()),
    };
    let json = inner.ssh_key_json(&key);
    inner.ssh_keys.insert(id, key);
    Ok((StatusCode::CREATED, axum::Json(json!({ "ssh_key": json }))).into_response())
}
