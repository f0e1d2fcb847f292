//! List queries (`page`, `per_page`, `label_selector`, `name`, `sort`), pagination
//! with its `Link` header, and the validation of request bodies (names, labels).

#[allow(clippy::wildcard_imports)]
use super::*;

#[derive(Debug, Default)]
pub(super) struct ListQuery {
    pub(super) page: u64,
    pub(super) per_page: u64,
    pub(super) name: Option<String>,
    pub(super) label_selector: Option<Selector>,
    pub(super) status: Vec<String>,
}

pub(super) fn parse_list_query(pairs: &[(String, String)]) -> Result<ListQuery, ApiError> {
    let mut query = ListQuery {
        page: 1,
        per_page: PER_PAGE_DEFAULT,
        ..ListQuery::default()
    };
    for (key, value) in pairs {
        match key.as_str() {
            "page" => {
                query.page = value
                    .parse()
                    .ok()
                    .filter(|page| *page >= 1)
                    .ok_or_else(|| ApiError::invalid_field("page", "must be an integer >= 1"))?;
            }
            "per_page" => {
                let per_page: u64 = value
                    .parse()
                    .ok()
                    .filter(|per_page| *per_page >= 1)
                    .ok_or_else(|| ApiError::invalid_field("per_page", "must be an integer >= 1"))?;
                query.per_page = per_page.min(PER_PAGE_MAX);
            }
            "name" => query.name = Some(value.clone()),
            "label_selector" => {
                query.label_selector =
                    Some(Selector::parse(value).map_err(|message| ApiError::invalid_field("label_selector", message))?);
            }
            "status" => query.status.push(value.clone()),
            _ => {}
        }
    }
    Ok(query)
}

/// The `Link` header of a page (`prev`, `next`, `last`), as relative URIs.
pub(super) fn link_header(uri: &axum::http::Uri, meta: &Value) -> Option<(header::HeaderName, String)> {
    let pagination = &meta["pagination"];
    let kept: Vec<String> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty() && !pair.starts_with("page="))
        .map(str::to_owned)
        .collect();
    let link = |page: &Value, rel: &str| {
        page.as_u64().map(|page| {
            let mut query = kept.clone();
            query.push(format!("page={page}"));
            format!("<{}?{}>; rel=\"{rel}\"", uri.path(), query.join("&"))
        })
    };
    let links: Vec<String> = [
        link(&pagination["previous_page"], "prev"),
        link(&pagination["next_page"], "next"),
        link(&pagination["last_page"], "last"),
    ]
    .into_iter()
    .flatten()
    .collect();
    (!links.is_empty()).then(|| (header::LINK, links.join(", ")))
}

/// A list answer: `{ key: items, meta }` with the `Link` header.
pub(super) fn list_response(uri: &axum::http::Uri, key: &str, items: Vec<Value>, meta: Value) -> Response {
    let link = link_header(uri, &meta);
    let mut response = axum::Json(json!({ key: items, "meta": meta })).into_response();
    if let Some((name, value)) = link
        && let Ok(value) = HeaderValue::from_str(&value)
    {
        response.headers_mut().insert(name, value);
    }
    response
}

/// One page of `items` and Hetzner's `meta.pagination`.
pub(super) fn paginate(items: Vec<Value>, query: &ListQuery) -> (Vec<Value>, Value) {
    let total = items.len() as u64;
    let last_page = total.div_ceil(query.per_page).max(1);
    let start = (query.page - 1).saturating_mul(query.per_page);
    let page_items: Vec<Value> = items
        .into_iter()
        .skip(start as usize)
        .take(query.per_page as usize)
        .collect();
    let meta = json!({ "pagination": {
        "page": query.page,
        "per_page": query.per_page,
        "previous_page": if query.page > 1 { json!(query.page - 1) } else { Value::Null },
        "next_page": if query.page < last_page { json!(query.page + 1) } else { Value::Null },
        "last_page": last_page,
        "total_entries": total,
    }});
    (page_items, meta)
}

pub(super) fn parse_id(text: &str, what: &str) -> Result<u64, ApiError> {
    text.parse()
        .map_err(|_| ApiError::invalid_field("id", format!("{what} id {text:?} is not an integer")))
}

/// A string field of the request, or an `invalid_input` naming it.
pub(super) fn string_field<'a>(body: &'a Value, field: &str, required: bool) -> Result<Option<&'a str>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) if !required => Ok(None),
        None | Some(Value::Null) => Err(ApiError::invalid_field(field, "is required")),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(ApiError::invalid_field(field, "must be a string")),
    }
}

pub(super) fn valid_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

pub(super) fn valid_label_key(key: &str) -> bool {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    let prefix_ok = prefix
        .is_none_or(|prefix| !prefix.starts_with("hetzner.cloud") && prefix.len() <= 253 && valid_hostname(prefix));
    name_ok && prefix_ok
}

pub(super) fn valid_label_value(value: &str) -> bool {
    value.is_empty()
        || (value.len() <= 63
            && value.as_bytes()[0].is_ascii_alphanumeric()
            && value.as_bytes()[value.len() - 1].is_ascii_alphanumeric()
            && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)))
}

pub(super) fn parse_labels(body: &Value) -> Result<BTreeMap<String, String>, ApiError> {
    let mut labels = BTreeMap::new();
    match body.get("labels") {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (key, value) in map {
                let Value::String(value) = value else {
                    return Err(ApiError::invalid_field(
                        "labels",
                        format!("value of {key:?} must be a string"),
                    ));
                };
                if !valid_label_key(key) {
                    return Err(ApiError::invalid_field("labels", format!("invalid label key {key:?}")));
                }
                if !valid_label_value(value) {
                    return Err(ApiError::invalid_field(
                        "labels",
                        format!("invalid label value {value:?}"),
                    ));
                }
                labels.insert(key.clone(), value.clone());
            }
        }
        Some(_) => return Err(ApiError::invalid_field("labels", "must be an object")),
    }
    Ok(labels)
}

pub(super) fn parse_json_body(bytes: &Bytes) -> Result<Value, ApiError> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|error| ApiError::new(StatusCode::BAD_REQUEST, "json_error", format!("invalid JSON: {error}")))?;
    if !value.is_object() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "json_error",
            "request body must be a JSON object",
        ));
    }
    Ok(value)
}

pub(super) fn find_index<T>(items: &[T], name_or_id: &str, name_of: impl Fn(&T) -> &str) -> Option<usize> {
    if let Ok(id) = name_or_id.parse::<usize>() {
        return (id >= 1 && id <= items.len()).then(|| id - 1);
    }
    items.iter().position(|item| name_of(item) == name_or_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_keys_and_values_follow_the_documented_rules() {
        assert!(valid_label_key("payperplay/platform"));
        assert!(valid_label_key("example.com/my"));
        assert!(valid_label_key("just-a-key"));
        assert!(!valid_label_key("hetzner.cloud/x"));
        assert!(!valid_label_key("-bad"));
        assert!(valid_label_value(""));
        assert!(valid_label_value("30000-30999"));
        assert!(!valid_label_value("a b"));
    }

    #[test]
    fn pagination_names_previous_next_and_last_pages() {
        let items: Vec<Value> = (0..7).map(|i| json!(i)).collect();
        let query = ListQuery {
            page: 2,
            per_page: 3,
            ..ListQuery::default()
        };
        let (page, meta) = paginate(items, &query);
        assert_eq!(page, vec![json!(3), json!(4), json!(5)]);
        assert_eq!(meta["pagination"]["previous_page"], 1);
        assert_eq!(meta["pagination"]["next_page"], 3);
        assert_eq!(meta["pagination"]["last_page"], 3);
        assert_eq!(meta["pagination"]["total_entries"], 7);
    }
}
