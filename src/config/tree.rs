//! The merged configuration: the file's TOML tree with the environment overrides written into
//! it, and a serde `Deserializer` over it.
//!
//! Deserializing our own tree (instead of another crate's) gives two things: a missing field is
//! reported as a value ([`TreeError::MissingField`]) instead of as wording to parse, and an
//! override, which is untyped text, is read as whatever its field asks for (`"1234"` is a string
//! for `mqtt.password` and a number for `mqtt.keep_alive_s`).

use std::collections::BTreeMap;
use std::fmt;

use serde::de::value::{MapDeserializer, SeqDeserializer, StringDeserializer};
use serde::de::{IntoDeserializer, Visitor};
use serde::forward_to_deserialize_any;

/// One node of the merged configuration.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Node {
    Table(BTreeMap<String, Node>),
    Array(Vec<Node>),
    String(String),
    Integer(i64),
    Float(f64),
    Boolean(bool),
    /// The text of an environment override: a boolean or number where it parses as one and the
    /// field takes any type, else a string.
    Override(String),
}

impl From<toml::Value> for Node {
    fn from(value: toml::Value) -> Self {
        match value {
            toml::Value::Table(table) => Node::Table(
                table
                    .into_iter()
                    .map(|(key, value)| (key, value.into()))
                    .collect(),
            ),
            toml::Value::Array(items) => Node::Array(items.into_iter().map(Node::from).collect()),
            toml::Value::String(text) => Node::String(text),
            toml::Value::Integer(number) => Node::Integer(number),
            toml::Value::Float(number) => Node::Float(number),
            toml::Value::Boolean(flag) => Node::Boolean(flag),
            // No field takes a date; as text, the error says what the field expected instead.
            toml::Value::Datetime(datetime) => Node::String(datetime.to_string()),
        }
    }
}

/// Why the merged tree does not fit the configuration's types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum TreeError {
    /// A required field is absent; the error's path is its parent's.
    MissingField(&'static str),
    /// Anything else (unknown field, wrong type, invalid value), as serde words it.
    Invalid(String),
}

impl fmt::Display for TreeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TreeError::MissingField(field) => write!(f, "missing field `{field}`"),
            TreeError::Invalid(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for TreeError {}

impl serde::de::Error for TreeError {
    fn custom<T: fmt::Display>(message: T) -> Self {
        TreeError::Invalid(message.to_string())
    }

    fn missing_field(field: &'static str) -> Self {
        TreeError::MissingField(field)
    }
}

/// The typed reading of an override's text for fields that accept several types.
fn override_scalar(text: String) -> Node {
    if let Ok(flag) = text.parse() {
        Node::Boolean(flag)
    } else if let Ok(number) = text.parse() {
        Node::Integer(number)
    } else if let Ok(number) = text.parse() {
        Node::Float(number)
    } else {
        Node::String(text)
    }
}

impl<'de> IntoDeserializer<'de, TreeError> for Node {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

impl<'de> serde::Deserializer<'de> for Node {
    type Error = TreeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TreeError> {
        match self {
            Node::Table(table) => {
                let mut entries = MapDeserializer::new(table.into_iter());
                let value = visitor.visit_map(&mut entries)?;
                entries.end()?;
                Ok(value)
            }
            Node::Array(items) => {
                let mut elements = SeqDeserializer::new(items.into_iter());
                let value = visitor.visit_seq(&mut elements)?;
                elements.end()?;
                Ok(value)
            }
            Node::String(text) => visitor.visit_string(text),
            Node::Integer(number) => visitor.visit_i64(number),
            Node::Float(number) => visitor.visit_f64(number),
            Node::Boolean(flag) => visitor.visit_bool(flag),
            Node::Override(text) => override_scalar(text).deserialize_any(visitor),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TreeError> {
        match self {
            Node::Override(text) => visitor.visit_string(text),
            other => other.deserialize_any(visitor),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TreeError> {
        self.deserialize_string(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TreeError> {
        // TOML has no null: a present key is always `Some`.
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, TreeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TreeError> {
        // The configuration's enums are unit variants written as strings.
        match self {
            Node::String(text) | Node::Override(text) => {
                visitor.visit_enum(StringDeserializer::<TreeError>::new(text))
            }
            other => other.deserialize_any(visitor),
        }
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char bytes byte_buf unit
        unit_struct seq tuple tuple_struct map struct identifier ignored_any
    }
}
